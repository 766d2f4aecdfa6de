"""Optimizers that update parameters in place, with the exact update rules of `torch.optim`,
plus global-norm gradient clipping and a cosine learning-rate schedule."""
from __future__ import annotations

import math

import numpy as np


class Optimizer:
    """Holds (param, grad) array pairs; `step()` updates each param in place from its grad."""

    def __init__(self, pairs, lr: float):
        self.pairs = list(pairs)
        if not self.pairs:
            raise ValueError("optimizer got no parameters")
        if lr <= 0:
            raise ValueError(f"learning rate must be positive, got {lr}")
        for p, g in self.pairs:
            if p.shape != g.shape:
                raise ValueError(f"param {p.shape} and grad {g.shape} shapes differ")
        self.lr = lr
        self.state = [dict() for _ in self.pairs]

    def step(self) -> None:
        for (p, g), s in zip(self.pairs, self.state):
            self.update(p, g, s)

    def update(self, p, g, s) -> None:
        raise NotImplementedError


class SGD(Optimizer):
    """p -= lr * v with v = momentum * v + g (torch's form: the lr multiplies the velocity)."""

    def __init__(self, pairs, lr=0.01, momentum=0.0):
        super().__init__(pairs, lr)
        self.momentum = momentum

    def update(self, p, g, s):
        if self.momentum:
            if "v" not in s:
                s["v"] = g.copy()                      # torch starts the buffer at the first gradient
            else:
                s["v"] *= self.momentum
                s["v"] += g
            g = s["v"]
        p -= self.lr * g


class RMSprop(Optimizer):
    """v = alpha v + (1 - alpha) g^2;  p -= lr g / (sqrt(v) + eps)."""

    def __init__(self, pairs, lr=0.01, alpha=0.99, eps=1e-8):
        super().__init__(pairs, lr)
        self.alpha, self.eps = alpha, eps

    def update(self, p, g, s):
        v = s.setdefault("v", np.zeros_like(p))
        v *= self.alpha
        v += (1 - self.alpha) * g * g
        p -= self.lr * g / (np.sqrt(v) + self.eps)


class Adam(Optimizer):
    """Adam (Kingma & Ba 2015): bias-corrected first and second moments.
    m = b1 m + (1-b1) g;  v = b2 v + (1-b2) g^2;  p -= lr * m_hat / (sqrt(v_hat) + eps)."""

    def __init__(self, pairs, lr=1e-3, betas=(0.9, 0.999), eps=1e-8):
        super().__init__(pairs, lr)
        self.b1, self.b2 = betas
        self.eps = eps
        self.t = 0

    def step(self):
        self.t += 1
        super().step()

    def update(self, p, g, s):
        if "m" not in s:
            s["m"], s["v"], s["tmp"] = np.zeros_like(p), np.zeros_like(p), np.zeros_like(p)
        m, v, tmp = s["m"], s["v"], s["tmp"]
        m *= self.b1
        m += (1 - self.b1) * g
        v *= self.b2
        np.multiply(g, g, out=tmp)
        tmp *= 1 - self.b2
        v += tmp
        bc1, bc2 = 1 - self.b1 ** self.t, 1 - self.b2 ** self.t
        np.sqrt(v, out=tmp)                             # denominator, computed in the scratch buffer
        tmp *= 1.0 / math.sqrt(bc2)
        tmp += self.eps
        np.divide(m, tmp, out=tmp)
        tmp *= self.lr / bc1
        p -= tmp


def clip_grad_norm(grads, max_norm: float) -> float:
    """Scale all gradients together so their global L2 norm is at most `max_norm`
    (`torch.nn.utils.clip_grad_norm_`). Returns the norm before clipping."""
    if max_norm <= 0:
        raise ValueError(f"max_norm must be positive, got {max_norm}")
    grads = list(grads)
    total = math.sqrt(sum(float(np.sum(g.astype(np.float64) ** 2)) for g in grads))
    scale = max_norm / (total + 1e-6)
    if scale < 1:
        for g in grads:
            g *= scale
    return total


def cosine_lr(step: int, total: int, lr_max: float, lr_min: float = 0.0, warmup: int = 0) -> float:
    """Linear warmup for `warmup` steps, then cosine decay from lr_max to lr_min at step `total`, then flat.

    The warmup is nanoGPT's, lr_max * (step + 1) / (warmup + 1), so `helpers.lm` reproduces its runs with it.
    """
    if step < warmup:
        return lr_max * (step + 1) / (warmup + 1)
    t = min(1.0, (step - warmup) / max(1, total - warmup))
    return lr_min + 0.5 * (lr_max - lr_min) * (1 + math.cos(math.pi * t))
