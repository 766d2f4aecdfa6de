"""Splits, cross-validation and grid search: how a model is evaluated and tuned without touching test data."""
from __future__ import annotations

from itertools import product

import numpy as np

from .base import Estimator


def clone(model: Estimator) -> Estimator:
    """A fresh, unfitted copy with the same constructor arguments."""
    return type(model)(**model.get_params())


class KFold:
    """k contiguous folds (after an optional shuffle); each sample is tested exactly once."""

    def __init__(self, n_splits: int = 5, shuffle: bool = False, seed: int = 0):
        if n_splits < 2:
            raise ValueError(f"n_splits must be >= 2, got {n_splits}")
        self.n_splits, self.shuffle, self.seed = n_splits, shuffle, seed

    def _folds(self, y: np.ndarray) -> list[np.ndarray]:
        n = len(y)
        if n < self.n_splits:
            raise ValueError(f"cannot split {n} samples into {self.n_splits} folds")
        idx = np.random.default_rng(self.seed).permutation(n) if self.shuffle else np.arange(n)
        return np.array_split(idx, self.n_splits)

    def split(self, X, y=None):
        """Yield (train_idx, test_idx) pairs."""
        folds = self._folds(np.asarray(y if y is not None else np.zeros(len(X))))
        for k, test in enumerate(folds):
            train = np.concatenate([f for j, f in enumerate(folds) if j != k])
            yield np.sort(train), np.sort(test)


class StratifiedKFold(KFold):
    """Folds that keep each class's proportion: every class's (shuffled) samples are dealt round-robin."""

    def _folds(self, y: np.ndarray) -> list[np.ndarray]:
        classes, counts = np.unique(y, return_counts=True)
        if counts.min() < self.n_splits:
            raise ValueError(f"class {classes[np.argmin(counts)]!r} has {counts.min()} samples "
                             f"< n_splits={self.n_splits}")
        rng = np.random.default_rng(self.seed)
        fold_of = np.empty(len(y), dtype=int)
        offset = 0
        for c in classes:
            idx = np.flatnonzero(y == c)
            if self.shuffle:
                idx = rng.permutation(idx)
            fold_of[idx] = (np.arange(len(idx)) + offset) % self.n_splits
            offset += len(idx)                                   # keeps fold sizes balanced across classes
        return [np.flatnonzero(fold_of == k) for k in range(self.n_splits)]


def train_test_split(X, y, test_size: float = 0.25, stratify: bool = True, seed: int = 0):
    """X_train, X_test, y_train, y_test; stratified: about `test_size` of every class goes to test."""
    X, y = np.asarray(X), np.asarray(y)
    if not 0 < test_size < 1:
        raise ValueError(f"test_size must be in (0, 1), got {test_size}")
    rng = np.random.default_rng(seed)
    groups = [np.flatnonzero(y == c) for c in np.unique(y)] if stratify else [np.arange(len(y))]
    test = np.concatenate([rng.permutation(g)[:max(1, round(test_size * len(g)))] for g in groups])
    mask = np.zeros(len(y), dtype=bool)
    mask[test] = True
    return X[~mask], X[mask], y[~mask], y[mask]


def cross_val_score(model: Estimator, X, y, cv=5) -> np.ndarray:
    """The test score of a fresh clone of `model` on each fold (cv: an int for StratifiedKFold, or a splitter)."""
    X, y = np.asarray(X), np.asarray(y)
    splitter = StratifiedKFold(cv, shuffle=True) if isinstance(cv, int) else cv
    return np.array([clone(model).fit(X[tr], y[tr]).score(X[te], y[te]) for tr, te in splitter.split(X, y)])


class GridSearchCV(Estimator):
    """Try every combination in `param_grid` by cross-validation; refit the best on all the data."""

    _fitted_attr = "best_estimator_"

    def __init__(self, estimator: Estimator, param_grid: dict, cv=5):
        self.estimator, self.param_grid, self.cv = estimator, param_grid, cv

    def fit(self, X, y):
        if not self.param_grid:
            raise ValueError("param_grid is empty")
        base = self.estimator.get_params()
        for name in self.param_grid:
            if name not in base:
                raise ValueError(f"{type(self.estimator).__name__} has no parameter {name!r}")
        names = list(self.param_grid)
        self.cv_results_ = []
        for values in product(*(self.param_grid[k] for k in names)):
            params = dict(zip(names, values))
            scores = cross_val_score(clone(self.estimator).set_params(**params), X, y, self.cv)
            self.cv_results_.append({"params": params, "mean_score": float(scores.mean()),
                                     "std_score": float(scores.std())})
        best = max(self.cv_results_, key=lambda r: r["mean_score"])   # first best wins ties
        self.best_params_, self.best_score_ = best["params"], best["mean_score"]
        self.best_estimator_ = clone(self.estimator).set_params(**self.best_params_).fit(X, y)
        return self

    def predict(self, X):
        self._check_fitted()
        return self.best_estimator_.predict(X)

    def score(self, X, y) -> float:
        self._check_fitted()
        return self.best_estimator_.score(X, y)
