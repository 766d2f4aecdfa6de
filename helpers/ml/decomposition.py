"""PCA by eigendecomposition of the sample covariance matrix.

The principal directions are the eigenvectors of C = Xc^T Xc / (n - 1); the variance along each is
its eigenvalue. Projecting onto the top k keeps the most variance any k-dimensional linear map can.
"""
from __future__ import annotations

import numpy as np

from .base import Estimator, check_X


class PCA(Estimator):
    """Top-`n_components` eigenvectors of the covariance; signs fixed so the largest |entry| is positive."""

    def __init__(self, n_components: int = 2):
        self.n_components = n_components

    def fit(self, X, y=None):
        X = check_X(X)
        n, d = X.shape
        if not 1 <= self.n_components <= d:
            raise ValueError(f"n_components={self.n_components} must be in [1, {d}]")
        self.mean_ = X.mean(axis=0)
        Xc = X - self.mean_                              # (n, d)
        cov = Xc.T @ Xc / (n - 1)                        # (d, d), symmetric
        evals, evecs = np.linalg.eigh(cov)               # ascending order, orthonormal columns
        order = np.argsort(evals)[::-1]
        evals, evecs = evals[order], evecs[:, order]
        flip = np.sign(evecs[np.argmax(np.abs(evecs), axis=0), np.arange(d)])
        evecs = evecs * flip                             # deterministic sign per component
        k = self.n_components
        self.components_ = evecs[:, :k].T                # (k, d): one direction per row
        self.explained_variance_ = evals[:k]
        self.explained_variance_ratio_ = evals[:k] / evals.sum()
        self.n_features_in_ = d
        return self

    def transform(self, X) -> np.ndarray:
        self._check_fitted()
        return (check_X(X, self.n_features_in_) - self.mean_) @ self.components_.T   # (n, k)

    def fit_transform(self, X, y=None) -> np.ndarray:
        return self.fit(X).transform(X)

    def inverse_transform(self, Z) -> np.ndarray:
        self._check_fitted()
        return np.asarray(Z) @ self.components_ + self.mean_   # (n, d)
