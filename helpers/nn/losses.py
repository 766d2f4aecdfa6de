"""Losses: `forward(pred, target)` returns the mean loss (a float), `backward()` returns dL/dpred."""
from __future__ import annotations

import numpy as np


class Loss:
    """Base class: validates shapes, caches what `backward` needs."""

    def __call__(self, pred, target) -> float:
        return self.forward(pred, target)

    @staticmethod
    def _labels(pred, target, who):
        if not isinstance(pred, np.ndarray) or pred.ndim != 2:
            raise ValueError(f"{who}: expected scores of shape (N, C), got {getattr(pred, 'shape', type(pred))}")
        target = np.asarray(target)
        if target.shape != (pred.shape[0],) or not np.issubdtype(target.dtype, np.integer):
            raise ValueError(f"{who}: expected integer labels of shape ({pred.shape[0]},), "
                             f"got {target.dtype} {target.shape}")
        if target.size and (target.min() < 0 or target.max() >= pred.shape[1]):
            raise ValueError(f"{who}: labels must be in [0, {pred.shape[1]}), got range "
                             f"[{target.min()}, {target.max()}]")
        return target


class MSELoss(Loss):
    """Mean squared error over all elements (`torch.nn.MSELoss()`): L = mean((pred - target)^2)."""

    def forward(self, pred, target):
        target = np.asarray(target)
        if not isinstance(pred, np.ndarray) or pred.shape != target.shape:
            raise ValueError(f"MSELoss: pred {getattr(pred, 'shape', None)} and target {target.shape} "
                             "must have the same shape")
        self.diff = pred - target
        return float(np.mean(self.diff ** 2))

    def backward(self):
        return (2.0 / self.diff.size) * self.diff


class CrossEntropyLoss(Loss):
    """Softmax + negative log-likelihood fused (`torch.nn.CrossEntropyLoss()`), from logits.

    Fusing is both stable (log-sum-exp with the max subtracted) and cheap: dL/dlogits = (softmax - onehot) / N.
    """

    def forward(self, logits, target):
        target = self._labels(logits, target, "CrossEntropyLoss")
        z = logits - logits.max(axis=1, keepdims=True)       # (N, C), max 0 -> exp never overflows
        np.exp(z, out=z)
        z /= z.sum(axis=1, keepdims=True)                    # softmax probabilities
        self.probs, self.target = z, target
        n = logits.shape[0]
        return float(-np.mean(np.log(np.maximum(z[np.arange(n), target], 1e-30))))

    def backward(self):
        n = self.probs.shape[0]
        grad = self.probs.copy()
        grad[np.arange(n), self.target] -= 1.0
        grad *= 1.0 / n
        return grad


class HingeLoss(Loss):
    """Multi-class hinge (`torch.nn.MultiMarginLoss()`, Weston–Watkins form):
    L_i = sum_{j != y_i} max(0, margin - s_{y_i} + s_j) / C, averaged over the batch."""

    def __init__(self, margin: float = 1.0):
        self.margin = margin

    def forward(self, scores, target):
        target = self._labels(scores, target, "HingeLoss")
        n, c = scores.shape
        rows = np.arange(n)
        margins = self.margin - scores[rows, target][:, None] + scores   # (N, C)
        margins[rows, target] = 0.0
        self.active = (margins > 0).astype(scores.dtype)                 # which terms have slope 1
        self.target, self.c = target, c
        return float(np.sum(np.maximum(margins, 0)) / (n * c))

    def backward(self):
        n = self.active.shape[0]
        grad = self.active.copy()
        grad[np.arange(n), self.target] = -self.active.sum(axis=1)
        grad *= 1.0 / (n * self.c)
        return grad
