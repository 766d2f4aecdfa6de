"""Standardization: zero mean, unit variance per feature, with statistics from the training split only."""
from __future__ import annotations

import numpy as np

from .base import Estimator, check_X


class StandardScaler(Estimator):
    """z = (x - mean) / std, where std uses ddof=0 (as scikit-learn); constant features keep scale 1."""

    def fit(self, X, y=None):
        X = check_X(X)
        self.mean_ = X.mean(axis=0)
        std = X.std(axis=0)
        self.scale_ = np.where(std > 10 * np.finfo(np.float64).eps, std, 1.0)
        self.n_features_in_ = X.shape[1]
        return self

    def transform(self, X) -> np.ndarray:
        self._check_fitted()
        return (check_X(X, self.n_features_in_) - self.mean_) / self.scale_

    def fit_transform(self, X, y=None) -> np.ndarray:
        return self.fit(X).transform(X)
