"""Gradient descent, one loop for all its variants.

batch (`batch_size=None`), mini-batch (`batch_size=b`) and stochastic (`batch_size=1`) GD differ only in
how many samples estimate the gradient; a learning-rate schedule and heavy-ball momentum are one line
each. `grad(w, idx)` returns the gradient of the loss on the samples `idx`.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from .base import check_choice

SCHEDULES = ("constant", "step", "cosine", "inverse")


def lr_at(schedule: str, lr0: float, t: int, total: int) -> float:
    """Learning rate at step t of `total`: constant, step (halve each quarter), cosine, or lr0 / (1 + 10 t/total)."""
    check_choice("schedule", schedule, SCHEDULES)
    if schedule == "constant":
        return lr0
    if schedule == "step":
        return lr0 * 0.5 ** (4 * t // max(total, 1))
    if schedule == "cosine":
        return lr0 * 0.5 * (1 + math.cos(math.pi * t / max(total, 1)))
    return lr0 / (1 + 10 * t / max(total, 1))


@dataclass
class Trace:
    """The result of `minimize`: final weights, loss after each epoch (index 0: at the start), optional path."""

    w: np.ndarray
    losses: list = field(default_factory=list)
    path: list = field(default_factory=list)


def minimize(grad: Callable, w0, n: int, lr: float, epochs: int, batch_size: int | None = None,
             momentum: float = 0.0, schedule: str = "constant", loss: Callable | None = None,
             seed: int = 0, trace: bool = False) -> Trace:
    """(Mini-batch / stochastic) gradient descent with heavy-ball momentum:

    v <- momentum * v - lr_t * grad(w, batch);  w <- w + v.
    """
    if lr <= 0 or epochs < 1 or not 0 <= momentum < 1:
        raise ValueError(f"need lr > 0, epochs >= 1, 0 <= momentum < 1; got {lr}, {epochs}, {momentum}")
    check_choice("schedule", schedule, SCHEDULES)
    bs = n if batch_size is None else int(batch_size)
    if not 1 <= bs <= n:
        raise ValueError(f"batch_size={batch_size} must be in [1, {n}]")
    rng = np.random.default_rng(seed)
    w = np.array(w0, dtype=np.float64)
    v = np.zeros_like(w)
    steps_per_epoch = math.ceil(n / bs)
    total, t = epochs * steps_per_epoch, 0
    out = Trace(w=w, losses=[loss(w)] if loss else [], path=[w.copy()] if trace else [])
    for _ in range(epochs):
        order = rng.permutation(n) if bs < n else np.arange(n)
        for start in range(0, n, bs):
            g = grad(w, order[start:start + bs])
            v = momentum * v - lr_at(schedule, lr, t, total) * g
            w = w + v
            t += 1
            if trace:
                out.path.append(w.copy())
        if loss:
            out.losses.append(loss(w))
    out.w = w
    return out
