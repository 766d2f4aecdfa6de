"""Linear models trained by gradient descent: least squares and (multinomial) logistic regression."""
from __future__ import annotations

import numpy as np

from .base import Classifier, Estimator, check_choice, check_X, check_X_y
from .optim import minimize


def add_bias(X: np.ndarray) -> np.ndarray:
    """[X, 1]: the intercept becomes the last weight."""
    return np.hstack([X, np.ones((len(X), 1))])


class LinearRegression(Estimator):
    """Least squares, L(w) = ||Xw - y||^2 / n, by gradient descent (`solver="gd"`) or the normal equation.

    GD default step: lr = 1 / lambda_max(H) with H = 2 X^T X / n the Hessian, inside the stability
    condition lr < 2 / lambda_max.
    """

    def __init__(self, solver: str = "gd", lr: float | None = None, epochs: int = 1000,
                 batch_size: int | None = None, momentum: float = 0.0, schedule: str = "constant",
                 seed: int = 0):
        self.solver, self.lr, self.epochs, self.batch_size = solver, lr, epochs, batch_size
        self.momentum, self.schedule, self.seed = momentum, schedule, seed

    def fit(self, X, y):
        check_choice("solver", self.solver, ("gd", "normal"))
        X, y = check_X_y(X, y)
        Xa, y = add_bias(X), y.astype(np.float64)                  # (n, d+1), (n,)
        n = len(y)
        if self.solver == "normal":
            w = np.linalg.solve(Xa.T @ Xa, Xa.T @ y)                # X^T X w = X^T y
            self.loss_history_ = []
        else:
            hessian = 2.0 * Xa.T @ Xa / n
            self.lambda_max_ = float(np.linalg.eigvalsh(hessian)[-1])
            lr = self.lr if self.lr is not None else 1.0 / self.lambda_max_
            grad = lambda w, idx: 2.0 * Xa[idx].T @ (Xa[idx] @ w - y[idx]) / len(idx)
            loss = lambda w: float(np.mean((Xa @ w - y) ** 2))
            tr = minimize(grad, np.zeros(Xa.shape[1]), n, lr, self.epochs, self.batch_size,
                          self.momentum, self.schedule, loss=loss, seed=self.seed)
            w, self.loss_history_ = tr.w, tr.losses
        self.coef_, self.intercept_ = w[:-1], float(w[-1])
        self.n_features_in_ = X.shape[1]
        return self

    def predict(self, X) -> np.ndarray:
        self._check_fitted()
        return check_X(X, self.n_features_in_) @ self.coef_ + self.intercept_

    def score(self, X, y) -> float:
        """R^2 = 1 - SS_res / SS_tot."""
        y = np.asarray(y, dtype=np.float64)
        return float(1 - np.sum((y - self.predict(X)) ** 2) / np.sum((y - y.mean()) ** 2))


def softmax(Z: np.ndarray) -> np.ndarray:
    """Row-wise softmax, shifted by the row max for stability."""
    E = np.exp(Z - Z.max(axis=1, keepdims=True))
    return E / E.sum(axis=1, keepdims=True)


def sigmoid(z: np.ndarray) -> np.ndarray:
    return 0.5 * (1.0 + np.tanh(0.5 * z))                          # = 1 / (1 + e^-z), no overflow


def soft_threshold(W: np.ndarray, t: float) -> np.ndarray:
    """prox of t * ||W||_1: shrink every entry toward 0 by t (exact zeros appear here)."""
    return np.sign(W) * np.maximum(np.abs(W) - t, 0.0)


class LogisticRegression(Classifier):
    """Logistic regression (sigmoid for 2 classes, multinomial softmax for K > 2), the objective of scikit-learn:

        mean cross-entropy + alpha * (l1_ratio * ||W||_1 + (1 - l1_ratio) / 2 * ||W||_2^2),  alpha = 1 / (C n),

    intercepts unpenalized. Solver: accelerated proximal gradient (FISTA): a gradient step on the smooth
    part, the L1 prox (soft-thresholding, i.e. ISTA) on the rest, Nesterov momentum with adaptive restart.
    """

    def __init__(self, C: float = 1.0, l1_ratio: float = 0.0, max_iter: int = 20_000, tol: float = 1e-7):
        self.C, self.l1_ratio, self.max_iter, self.tol = C, l1_ratio, max_iter, tol

    def fit(self, X, y):
        if not self.C > 0 or not 0.0 <= self.l1_ratio <= 1.0:
            raise ValueError(f"need C > 0 and 0 <= l1_ratio <= 1; got C={self.C}, l1_ratio={self.l1_ratio}")
        X, y = check_X_y(X, y)
        yi = self._encode(y)
        K = len(self.classes_)
        if K < 2:
            raise ValueError(f"need at least 2 classes, got {self.classes_}")
        n, d = X.shape
        Xa = add_bias(X)                                            # (n, d+1)
        Y = yi[:, None].astype(float) if K == 2 else np.eye(K)[yi]  # (n, m), m = 1 or K
        alpha = 0.0 if np.isinf(self.C) else 1.0 / (self.C * n)
        l1, l2 = alpha * self.l1_ratio, alpha * (1.0 - self.l1_ratio)
        link = (lambda Z: sigmoid(Z)) if K == 2 else softmax
        # Lipschitz constant of the smooth gradient: curvature of the loss is <= 1/4 (sigmoid), 1/2 (softmax)
        L = (0.25 if K == 2 else 0.5) * np.linalg.norm(Xa, 2) ** 2 / n + l2
        step = 1.0 / L
        mask = np.ones((d + 1, 1)); mask[-1] = 0.0                  # no penalty on the intercept row

        W = np.zeros((d + 1, Y.shape[1]))                           # (d+1, m)
        V, t = W.copy(), 1.0
        for it in range(1, self.max_iter + 1):
            G = Xa.T @ (link(Xa @ V) - Y) / n + l2 * mask * V       # gradient of the smooth part at V
            W_new = V - step * G
            W_new[:-1] = soft_threshold(W_new[:-1], step * l1)      # ISTA: prox of the L1 term
            if np.sum((V - W_new) * (W_new - W)) > 0:               # momentum points uphill: restart
                t = 1.0
            t_new = 0.5 * (1 + np.sqrt(1 + 4 * t * t))
            V = W_new + (t - 1) / t_new * (W_new - W)
            change = np.max(np.abs(W_new - W))
            W, t = W_new, t_new
            if change < self.tol:
                break
        self.n_iter_ = it
        self.coef_, self.intercept_ = W[:-1].T, W[-1]               # (m, d), (m,) as scikit-learn
        self.n_features_in_ = d
        return self

    def decision_function(self, X) -> np.ndarray:
        self._check_fitted()
        Z = check_X(X, self.n_features_in_) @ self.coef_.T + self.intercept_
        return Z[:, 0] if Z.shape[1] == 1 else Z

    def predict_proba(self, X) -> np.ndarray:
        Z = self.decision_function(X)
        if Z.ndim == 1:
            p = sigmoid(Z)
            return np.stack([1 - p, p], axis=1)
        return softmax(Z)

    def predict(self, X) -> np.ndarray:
        P = self.predict_proba(X)                                   # checks fitted first
        return self.classes_[np.argmax(P, axis=1)]
