"""A CART decision tree for classification, grown greedily with the gini or entropy criterion."""
from __future__ import annotations

import numpy as np

from .base import Classifier, check_choice, check_X, check_X_y


def impurity(counts: np.ndarray, criterion: str) -> np.ndarray:
    """Impurity of class-count vectors (..., K): gini 1 - sum p^2, or entropy -sum p log2 p."""
    n = counts.sum(-1, keepdims=True)
    p = counts / np.maximum(n, 1)
    if criterion == "gini":
        return 1.0 - (p * p).sum(-1)
    with np.errstate(divide="ignore", invalid="ignore"):
        return -np.where(p > 0, p * np.log2(p), 0.0).sum(-1)


def best_split(X: np.ndarray, Y: np.ndarray, criterion: str, min_leaf: int):
    """The (feature, threshold, weighted child impurity) minimizing n_L I(L) + n_R I(R), or None.

    Every feature at once: sort each column, cumulative class counts give the left child of every
    cut; a cut between two equal values is not allowed; thresholds are midpoints.
    """
    n, d = X.shape                                               # Y: (n, K) one-hot
    order = np.argsort(X, axis=0, kind="stable")                 # (n, d)
    xs = np.take_along_axis(X, order, axis=0)                    # (n, d) sorted columns
    left = np.cumsum(Y[order], axis=0)[:-1]                      # (n-1, d, K): counts of the first i+1
    right = Y.sum(0) - left
    n_left = np.arange(1, n)[:, None]                            # (n-1, 1)
    cost = n_left * impurity(left, criterion) + (n - n_left) * impurity(right, criterion)   # (n-1, d)
    valid = (xs[1:] > xs[:-1]) & (n_left >= min_leaf) & (n - n_left >= min_leaf)
    if not valid.any():
        return None
    cost = np.where(valid, cost, np.inf)
    i, f = np.unravel_index(np.argmin(cost), cost.shape)
    return int(f), float((xs[i, f] + xs[i + 1, f]) / 2), float(cost[i, f])


class DecisionTreeClassifier(Classifier):
    """Greedy top-down growth; a node becomes a leaf when pure, at `max_depth`, below
    `min_samples_split`, or when no cut respects `min_samples_leaf`. Leaves predict the majority class."""

    CRITERIA = ("gini", "entropy")

    def __init__(self, criterion: str = "gini", max_depth: int | None = None,
                 min_samples_split: int = 2, min_samples_leaf: int = 1):
        self.criterion, self.max_depth = criterion, max_depth
        self.min_samples_split, self.min_samples_leaf = min_samples_split, min_samples_leaf

    def fit(self, X, y):
        check_choice("criterion", self.criterion, self.CRITERIA)
        X, y = check_X_y(X, y)
        Y = np.eye(len(np.unique(y)))[self._encode(y)]            # (n, K) one-hot
        # flat node arrays: feature (-1 for a leaf), threshold, children, class counts
        self.feature_, self.threshold_, self.left_, self.right_, self.value_ = [], [], [], [], []
        stack = [(np.arange(len(X)), 0, None, None)]              # (samples, depth, parent, is_left)
        while stack:
            idx, depth, parent, is_left = stack.pop()
            node = len(self.feature_)
            if parent is not None:
                (self.left_ if is_left else self.right_)[parent] = node
            counts = Y[idx].sum(0)
            self.feature_.append(-1); self.threshold_.append(0.0)
            self.left_.append(-1); self.right_.append(-1); self.value_.append(counts)
            stop = (counts.max() == len(idx) or len(idx) < self.min_samples_split
                    or (self.max_depth is not None and depth >= self.max_depth))
            split = None if stop else best_split(X[idx], Y[idx], self.criterion, self.min_samples_leaf)
            if split is None:
                continue
            f, thr, _ = split
            go_left = X[idx, f] <= thr
            self.feature_[node], self.threshold_[node] = f, thr
            stack.append((idx[~go_left], depth + 1, node, False))
            stack.append((idx[go_left], depth + 1, node, True))
        for name in ("feature_", "threshold_", "left_", "right_", "value_"):
            setattr(self, name, np.array(getattr(self, name)))
        self.n_features_in_ = X.shape[1]
        return self

    @property
    def depth_(self) -> int:
        self._check_fitted()
        depth = np.zeros(len(self.feature_), dtype=int)
        for node in range(len(self.feature_)):                    # parents come before children
            for child in (self.left_[node], self.right_[node]):
                if child >= 0:
                    depth[child] = depth[node] + 1
        return int(depth.max())

    def apply(self, X) -> np.ndarray:
        """Leaf index of each row: all rows descend one level per step."""
        self._check_fitted()
        X = check_X(X, self.n_features_in_)
        node = np.zeros(len(X), dtype=int)
        while True:
            inner = self.feature_[node] >= 0
            if not inner.any():
                return node
            f, n = self.feature_[node[inner]], node[inner]
            go_left = X[inner, f] <= self.threshold_[n]
            node[inner] = np.where(go_left, self.left_[n], self.right_[n])

    def predict_proba(self, X) -> np.ndarray:
        leaves = self.apply(X)                                    # checks fitted first
        counts = self.value_[leaves]
        return counts / counts.sum(1, keepdims=True)

    def predict(self, X) -> np.ndarray:
        P = self.predict_proba(X)                                 # checks fitted first
        return self.classes_[np.argmax(P, axis=1)]
