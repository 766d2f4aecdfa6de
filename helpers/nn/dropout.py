"""`DropoutLayer`: inverted dropout, so evaluation needs no rescaling."""
from __future__ import annotations

import numpy as np

from .layer import Layer


class DropoutLayer(Layer):
    """Training: zero each unit with probability p and scale survivors by 1/(1-p) (E[out] = x).
    Eval: identity. The mask is kept for backward, where the same mask multiplies the gradient.

    Speed: the mask comes from 16 raw random bits per unit (`bits >= p * 2^16`), about twice as fast as
    drawing floats; p is thereby rounded up to a multiple of 2^-16 (and the survivors are scaled to match).
    """

    def __init__(self, p: float = 0.5, rng: np.random.Generator | None = None):
        super().__init__()
        if not 0.0 <= p < 1.0:
            raise ValueError(f"dropout probability must be in [0, 1), got {p}")
        self.p = p
        self.rng = rng if rng is not None else np.random.default_rng(0)

    def forward(self, x):
        if not isinstance(x, np.ndarray):
            raise ValueError(f"DropoutLayer: expected a numpy array, got {type(x).__name__}")
        if not self.training or self.p == 0.0:
            self.mask = None
            return x
        bits = self.rng.bit_generator.random_raw(-(-x.size // 4)).view(np.uint16)[:x.size]
        threshold = int(np.ceil(self.p * 65536))                         # P(drop) = threshold / 2^16
        self.mask = (bits.reshape(x.shape) >= threshold).astype(x.dtype)
        self.mask *= 65536 / (65536 - threshold)  # (N, D): 0 or 1/(1-p), so E[out] = x exactly
        return x * self.mask

    def backward(self, grad_out):
        if self.mask is None:
            return grad_out
        grad_out *= self.mask
        return grad_out

    def __repr__(self):
        return f"DropoutLayer(p={self.p})"
