"""Gaussian Naive Bayes: classes with priors, features independent and Gaussian given the class."""
from __future__ import annotations

import numpy as np

from .base import Classifier, check_X, check_X_y


class GaussianNB(Classifier):
    """p(y=k | x) ∝ pi_k prod_j N(x_j | mu_kj, s2_kj).

    Maximum-likelihood means and variances per class; `var_smoothing * max_j Var(x_j)` is added to every
    variance (scikit-learn's rule) so a constant feature cannot make the likelihood infinite.
    """

    def __init__(self, var_smoothing: float = 1e-9):
        self.var_smoothing = var_smoothing

    def fit(self, X, y):
        X, y = check_X_y(X, y)
        yi = self._encode(y)
        K = len(self.classes_)
        self.epsilon_ = self.var_smoothing * np.var(X, axis=0).max()
        self.theta_ = np.array([X[yi == k].mean(0) for k in range(K)])                # (K, d) means
        self.var_ = np.array([X[yi == k].var(0) for k in range(K)]) + self.epsilon_   # (K, d)
        self.class_prior_ = np.bincount(yi, minlength=K) / len(yi)
        self.n_features_in_ = X.shape[1]
        return self

    def joint_log_likelihood(self, X) -> np.ndarray:
        """log pi_k + sum_j log N(x_j | mu_kj, s2_kj), (n, K)."""
        self._check_fitted()
        X = check_X(X, self.n_features_in_)
        out = []
        for k in range(len(self.classes_)):
            log_norm = -0.5 * np.sum(np.log(2.0 * np.pi * self.var_[k]))
            quad = -0.5 * np.sum((X - self.theta_[k]) ** 2 / self.var_[k], axis=1)
            out.append(np.log(self.class_prior_[k]) + log_norm + quad)
        return np.array(out).T

    def predict_proba(self, X) -> np.ndarray:
        J = self.joint_log_likelihood(X)
        J = J - J.max(1, keepdims=True)
        P = np.exp(J)
        return P / P.sum(1, keepdims=True)

    def predict(self, X) -> np.ndarray:
        J = self.joint_log_likelihood(X)                          # checks fitted first
        return self.classes_[np.argmax(J, axis=1)]
