"""Support vector classification: kernels, an SMO solver for the dual, one-vs-one for many classes.

Dual (libsvm's form): min_a 1/2 a^T Q a - 1^T a  s.t. 0 <= a_i <= C, y^T a = 0,  Q_ij = y_i y_j K(x_i, x_j).
SMO changes two multipliers at a time, which keeps y^T a = 0 and has a closed-form solution; the
pair is the maximal violating one chosen with second-order information (Fan, Chen & Lin, JMLR 2005).
"""
from __future__ import annotations

from itertools import combinations

import numpy as np

from .base import Classifier, check_choice, check_X, check_X_y

KERNELS = ("linear", "poly", "rbf")
TAU = 1e-12


def kernel_matrix(A: np.ndarray, B: np.ndarray, kernel: str, gamma: float = 1.0, degree: int = 3,
                  coef0: float = 0.0) -> np.ndarray:
    """K(a_i, b_j), (len(A), len(B)): linear a.b, poly (gamma a.b + coef0)^degree, rbf exp(-gamma ||a-b||^2)."""
    check_choice("kernel", kernel, KERNELS)
    G = A @ B.T
    if kernel == "linear":
        return G
    if kernel == "poly":
        return (gamma * G + coef0) ** degree
    d2 = (A * A).sum(1)[:, None] - 2 * G + (B * B).sum(1)[None, :]
    return np.exp(-gamma * np.maximum(d2, 0.0))


def pair_update(a_i: float, a_j: float, y_i: float, y_j: float, G_i: float, G_j: float, K_ii: float,
                K_jj: float, K_ij: float, C: float) -> tuple[float, float]:
    """SMO's core: the new (a_i, a_j) that minimize the dual over the pair, all other multipliers fixed.

    Moving along y_i a_i + y_j a_j = const (so y^T a stays 0), the dual is a parabola of curvature
    K_ii + K_jj - 2 K_ij; step to its minimum (G = Q a - 1 is the dual gradient), then clip to the box
    [0, C]^2. libsvm's case analysis, which sets the clipped values exactly (0, C, or the preserved sum).
    """
    eta = max(K_ii + K_jj - 2 * K_ij, TAU)                      # curvature along the constraint line
    if y_i != y_j:                                              # a_i - a_j is preserved
        delta = (-G_i - G_j) / eta
        diff = a_i - a_j
        a_i, a_j = a_i + delta, a_j + delta
        if diff > 0:
            if a_j < 0: a_j, a_i = 0.0, diff
        else:
            if a_i < 0: a_i, a_j = 0.0, -diff
        if diff > 0:
            if a_i > C: a_i, a_j = C, C - diff
        else:
            if a_j > C: a_j, a_i = C, C + diff
    else:                                                       # a_i + a_j is preserved
        delta = (G_i - G_j) / eta
        s = a_i + a_j
        a_i, a_j = a_i - delta, a_j + delta
        if s > C:
            if a_i > C: a_i, a_j = C, s - C
        else:
            if a_j < 0: a_j, a_i = 0.0, s
        if s > C:
            if a_j > C: a_j, a_i = C, s - C
        else:
            if a_i < 0: a_i, a_j = 0.0, s
    return a_i, a_j


def smo(K: np.ndarray, y: np.ndarray, C: float, tol: float = 1e-3, max_iter: int = 100_000,
        update=pair_update):
    """Solve the binary dual for labels y in {-1, +1}; returns (alpha, rho, n_iter).

    The decision function is f(x) = sum_i alpha_i y_i K(x_i, x) - rho. Each step picks the maximal
    violating pair (second-order choice of j) and lets `update` (default `pair_update`) solve it. Stops
    when the maximal KKT violation m(a) - M(a) < tol (libsvm's criterion and default).
    """
    n = len(y)
    Q = (y[:, None] * y[None, :]) * K                          # (n, n)
    QD = np.diag(K).copy()
    a = np.zeros(n)
    G = -np.ones(n)                                             # gradient Q a - 1 at a = 0
    for it in range(1, max_iter + 1):
        yG = y * G
        up = np.where(y > 0, a < C, a > 0)                      # a_t can move "up" along y_t
        low = np.where(y > 0, a > 0, a < C)
        v_up = np.where(up, -yG, -np.inf)
        i = int(np.argmax(v_up))
        g_max = v_up[i]
        v_low = np.where(low, yG, -np.inf)
        if g_max + v_low.max() < tol:                           # KKT satisfied within tol
            break
        b = g_max + yG                                          # > 0 for violating partners
        quad = np.maximum(QD[i] + QD - 2 * K[i], TAU)
        score = np.where(low & (b > 0), -(b * b) / quad, np.inf)
        j = int(np.argmin(score))
        ai, aj = a[i], a[j]
        a[i], a[j] = update(ai, aj, y[i], y[j], G[i], G[j], QD[i], QD[j], K[i, j], C)
        G += Q[i] * (a[i] - ai) + Q[j] * (a[j] - aj)
    yG = y * G
    free = (a > 0) & (a < C)
    if free.any():                                              # rho = y_i G_i on any free vector; average them
        rho = float(yG[free].mean())
    else:                                                       # midpoint of the feasible interval
        at_up = ((a >= C) & (y < 0)) | ((a <= 0) & (y > 0))
        rho = float((yG[at_up].min(initial=np.inf) + yG[~at_up].max(initial=-np.inf)) / 2)
    return a, rho, it


class SVC(Classifier):
    """Kernel SVM (C-SVC). Multi-class by one-vs-one voting over all K(K-1)/2 class pairs, as libsvm.

    gamma="scale" is 1 / (n_features * X.var()), scikit-learn's default.
    """

    def __init__(self, C: float = 1.0, kernel: str = "rbf", gamma="scale", degree: int = 3,
                 coef0: float = 0.0, tol: float = 1e-3, max_iter: int = 100_000):
        self.C, self.kernel, self.gamma, self.degree = C, kernel, gamma, degree
        self.coef0, self.tol, self.max_iter = coef0, tol, max_iter

    def _kernel(self, A, B):
        return kernel_matrix(A, B, self.kernel, self._gamma, self.degree, self.coef0)

    def fit(self, X, y):
        check_choice("kernel", self.kernel, KERNELS)
        if not self.C > 0:
            raise ValueError(f"C must be > 0, got {self.C}")
        X, y = check_X_y(X, y)
        yi = self._encode(y)
        if len(self.classes_) < 2:
            raise ValueError(f"need at least 2 classes, got {self.classes_}")
        if self.gamma == "scale":
            var = X.var()
            self._gamma = 1.0 / (X.shape[1] * var) if var > 0 else 1.0
        elif self.gamma == "auto":
            self._gamma = 1.0 / X.shape[1]
        elif isinstance(self.gamma, (int, float)) and self.gamma > 0:
            self._gamma = float(self.gamma)
        else:
            raise ValueError(f"gamma must be 'scale', 'auto' or a positive number, got {self.gamma!r}")
        self.machines_ = []                                     # (class a, class b, support X, alpha*y, rho)
        self.n_iter_, support = 0, np.zeros(len(X), dtype=bool)
        for ca, cb in combinations(range(len(self.classes_)), 2):
            m = (yi == ca) | (yi == cb)
            Xp, yp = X[m], np.where(yi[m] == ca, 1.0, -1.0)     # first class is +1 (libsvm)
            alpha, rho, it = smo(self._kernel(Xp, Xp), yp, self.C, self.tol, self.max_iter)
            sv = alpha > 0
            self.machines_.append((ca, cb, Xp[sv], alpha[sv] * yp[sv], rho))
            self.n_iter_ += it
            support[np.flatnonzero(m)[sv]] = True
        self.support_ = np.flatnonzero(support)                 # training rows that are a support vector anywhere
        self.n_support_ = len(self.support_)
        self.n_features_in_ = X.shape[1]
        return self

    def decision_function(self, X) -> np.ndarray:
        """One column per class pair (a, b): positive means a."""
        self._check_fitted()
        X = check_X(X, self.n_features_in_)
        return np.stack([self._kernel(X, S) @ coef - rho for _, _, S, coef, rho in self.machines_], axis=1)

    def predict(self, X) -> np.ndarray:
        F = self.decision_function(X)                           # (n, n_pairs)
        votes = np.zeros((len(F), len(self.classes_)), dtype=int)
        for col, (ca, cb, *_) in enumerate(self.machines_):
            winner = np.where(F[:, col] > 0, ca, cb)
            votes[np.arange(len(F)), winner] += 1
        return self.classes_[np.argmax(votes, axis=1)]          # ties: the lowest class index (libsvm)
