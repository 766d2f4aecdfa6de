"""Scores: accuracy, and the adjusted Rand index for comparing clusterings."""
from __future__ import annotations

import numpy as np


def accuracy_score(y_true, y_pred) -> float:
    y_true, y_pred = np.asarray(y_true), np.asarray(y_pred)
    if y_true.shape != y_pred.shape:
        raise ValueError(f"shapes differ: {y_true.shape} vs {y_pred.shape}")
    return float(np.mean(y_true == y_pred))


def adjusted_rand_score(a, b) -> float:
    """Pair-counting agreement of two labelings, 0 in expectation for random ones, 1 when identical up to renaming:
    ARI = (sum_ij C(n_ij,2) - E) / (0.5 (sum_i C(a_i,2) + sum_j C(b_j,2)) - E),  E = sum_i C(a_i,2) sum_j C(b_j,2) / C(n,2)."""
    a, b = np.asarray(a), np.asarray(b)
    if a.shape != b.shape or a.ndim != 1:
        raise ValueError(f"need two 1-D labelings of equal length, got {a.shape} and {b.shape}")
    _, ai = np.unique(a, return_inverse=True)
    _, bi = np.unique(b, return_inverse=True)
    table = np.zeros((ai.max() + 1, bi.max() + 1))
    np.add.at(table, (ai, bi), 1)                               # contingency table n_ij
    pairs = lambda m: (m * (m - 1) / 2).sum()
    sum_ij, sum_a, sum_b = pairs(table), pairs(table.sum(1)), pairs(table.sum(0))
    expected = sum_a * sum_b / (len(a) * (len(a) - 1) / 2)
    top = 0.5 * (sum_a + sum_b) - expected
    return 1.0 if top == 0 else float((sum_ij - expected) / top)
