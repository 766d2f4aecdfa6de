"""Clustering: K-Means (Lloyd's algorithm, random or k-means++ seeding) and a Gaussian mixture fit by EM."""
from __future__ import annotations

import numpy as np

from .base import Estimator, check_choice, check_X


def sq_dists(X: np.ndarray, C: np.ndarray) -> np.ndarray:
    """||x_i - c_j||^2 for every pair, (n, k), via ||x||^2 - 2 x.c + ||c||^2 (clipped at 0)."""
    d = (X * X).sum(1)[:, None] - 2 * X @ C.T + (C * C).sum(1)[None, :]
    return np.maximum(d, 0.0)


def kmeans_plusplus(X: np.ndarray, k: int, rng: np.random.Generator) -> np.ndarray:
    """Greedy k-means++ (Arthur & Vassilvitskii 2007, as scikit-learn): sample each new center with
    probability proportional to D(x)^2, trying 2 + log k candidates and keeping the one that lowers
    the potential most."""
    n = len(X)
    trials = 2 + int(np.log(k))
    centers = [X[rng.integers(n)]]
    d2 = sq_dists(X, centers[0][None])[:, 0]                     # (n,) distance to the nearest center
    for _ in range(1, k):
        cand = rng.choice(n, size=trials, p=d2 / d2.sum())       # D^2 sampling
        cand_d2 = np.minimum(d2[None, :], sq_dists(X[cand], X))  # (trials, n)
        best = int(np.argmin(cand_d2.sum(1)))
        centers.append(X[cand[best]])
        d2 = cand_d2[best]
    return np.array(centers)


class KMeans(Estimator):
    """Lloyd's algorithm: assign each point to its nearest center, move each center to its points' mean;
    repeat until the centers move less than `tol` (relative to the data variance). Best of `n_init` runs."""

    _fitted_attr = "cluster_centers_"

    def __init__(self, n_clusters: int = 8, init: str = "k-means++", n_init: int = 10,
                 max_iter: int = 300, tol: float = 1e-4, seed: int = 0):
        self.n_clusters, self.init, self.n_init = n_clusters, init, n_init
        self.max_iter, self.tol, self.seed = max_iter, tol, seed

    def _lloyd(self, X, centers, tol):
        for it in range(1, self.max_iter + 1):
            d = sq_dists(X, centers)                              # (n, k)
            labels = np.argmin(d, axis=1)
            onehot = np.eye(self.n_clusters)[labels]              # (n, k)
            counts = onehot.sum(0)
            new = onehot.T @ X / np.maximum(counts, 1)[:, None]   # each center -> mean of its points
            for j in np.flatnonzero(counts == 0):                 # empty cluster: take the worst-served point
                new[j] = X[np.argmax(d.min(1))]
            shift = np.sum((new - centers) ** 2)
            centers = new
            if shift <= tol:
                break
        d = sq_dists(X, centers)
        labels = np.argmin(d, axis=1)
        return centers, labels, float(d[np.arange(len(X)), labels].sum()), it

    def fit(self, X, y=None):
        check_choice("init", self.init, ("k-means++", "random"))
        X = check_X(X)
        if not 1 <= self.n_clusters <= len(X):
            raise ValueError(f"n_clusters={self.n_clusters} must be in [1, {len(X)}]")
        rng = np.random.default_rng(self.seed)
        tol = self.tol * np.mean(np.var(X, axis=0))
        best = None
        for _ in range(self.n_init):
            if self.init == "random":
                centers = X[rng.choice(len(X), self.n_clusters, replace=False)].copy()
            else:
                centers = kmeans_plusplus(X, self.n_clusters, rng)
            run = self._lloyd(X, centers, tol)
            if best is None or run[2] < best[2]:
                best = run
        self.cluster_centers_, self.labels_, self.inertia_, self.n_iter_ = best
        self.n_features_in_ = X.shape[1]
        return self

    def predict(self, X) -> np.ndarray:
        self._check_fitted()
        return np.argmin(sq_dists(check_X(X, self.n_features_in_), self.cluster_centers_), axis=1)

    def fit_predict(self, X, y=None) -> np.ndarray:
        return self.fit(X).labels_


def logsumexp(A: np.ndarray, axis: int) -> np.ndarray:
    m = A.max(axis=axis, keepdims=True)
    return (m + np.log(np.exp(A - m).sum(axis=axis, keepdims=True))).squeeze(axis)


def gaussian_log_pdf(X: np.ndarray, mean: np.ndarray, cov: np.ndarray) -> np.ndarray:
    """log N(x | mean, cov) for each row of X, through the Cholesky factor cov = L L^T."""
    d = X.shape[1]
    L = np.linalg.cholesky(cov)
    z = np.linalg.solve(L, (X - mean).T)                          # (d, n): L^-1 (x - mu)
    log_det = 2 * np.log(np.diag(L)).sum()
    return -0.5 * (d * np.log(2 * np.pi) + log_det + (z * z).sum(0))


class GaussianMixture(Estimator):
    """Mixture of K full-covariance Gaussians fit by EM, started from K-Means labels.

    E-step: responsibilities r_ik = pi_k N(x_i|mu_k, S_k) / sum_j pi_j N(x_i|mu_j, S_j).
    M-step: pi_k = N_k / n, mu_k = sum_i r_ik x_i / N_k, S_k = sum_i r_ik (x_i-mu_k)(x_i-mu_k)^T / N_k
    (+ reg_covar I). The mean log-likelihood never decreases (`log_likelihood_history_`).
    """

    _fitted_attr = "means_"

    def __init__(self, n_components: int = 1, max_iter: int = 100, tol: float = 1e-3,
                 reg_covar: float = 1e-6, seed: int = 0):
        self.n_components, self.max_iter, self.tol = n_components, max_iter, tol
        self.reg_covar, self.seed = reg_covar, seed

    def _m_step(self, X, R):
        n, d = X.shape
        Nk = R.sum(0) + 10 * np.finfo(float).eps                    # (K,)
        self.weights_ = Nk / n
        self.means_ = R.T @ X / Nk[:, None]                         # (K, d)
        covs = []
        for k in range(self.n_components):
            D = X - self.means_[k]
            covs.append((R[:, k, None] * D).T @ D / Nk[k] + self.reg_covar * np.eye(d))
        self.covariances_ = np.array(covs)                          # (K, d, d)

    def _log_joint(self, X) -> np.ndarray:
        """log pi_k + log N(x_i | mu_k, S_k), (n, K)."""
        return np.stack([np.log(w) + gaussian_log_pdf(X, m, c)
                         for w, m, c in zip(self.weights_, self.means_, self.covariances_)], axis=1)

    def fit(self, X, y=None):
        X = check_X(X)
        K = self.n_components
        if not 1 <= K <= len(X):
            raise ValueError(f"n_components={K} must be in [1, {len(X)}]")
        labels = KMeans(K, n_init=1, seed=self.seed).fit(X).labels_
        self._m_step(X, np.eye(K)[labels])
        self.log_likelihood_history_ = []
        self.converged_ = False
        for _ in range(self.max_iter):
            A = self._log_joint(X)                                  # E-step
            ll = logsumexp(A, axis=1)                               # (n,) log p(x_i)
            self.log_likelihood_history_.append(float(ll.mean()))
            self._m_step(X, np.exp(A - ll[:, None]))                # M-step on responsibilities
            h = self.log_likelihood_history_
            if len(h) > 1 and abs(h[-1] - h[-2]) < self.tol:
                self.converged_ = True
                break
        self.n_features_in_ = X.shape[1]
        return self

    def score_samples(self, X) -> np.ndarray:
        """log p(x) for each row."""
        self._check_fitted()
        return logsumexp(self._log_joint(check_X(X, self.n_features_in_)), axis=1)

    def score(self, X, y=None) -> float:
        """Mean log-likelihood per sample."""
        return float(self.score_samples(X).mean())

    def predict_proba(self, X) -> np.ndarray:
        self._check_fitted()
        A = self._log_joint(check_X(X, self.n_features_in_))
        return np.exp(A - logsumexp(A, axis=1)[:, None])

    def predict(self, X) -> np.ndarray:
        return np.argmax(self.predict_proba(X), axis=1)
