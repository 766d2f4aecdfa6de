"""Activation functions, their derivatives written by hand, and `ActivationLayer` that applies one."""
from __future__ import annotations

import numpy as np
from scipy.special import erf

from .layer import Layer

LEAKY_SLOPE = 0.01  # torch.nn.LeakyReLU's default negative slope
_SQRT2 = np.sqrt(2.0)
_INV_SQRT_2PI = 1.0 / np.sqrt(2.0 * np.pi)


def _sigmoid(x):
    return 0.5 * (1.0 + np.tanh(0.5 * x))    # = 1/(1+e^-x), without overflow for large |x|


# name -> (f(x), f'(x)); derivatives in closed form
ACTIVATIONS = {
    "relu": (lambda x: np.maximum(x, 0), lambda x: (x > 0).astype(x.dtype)),
    "sigmoid": (_sigmoid, lambda x: _sigmoid(x) * (1 - _sigmoid(x))),
    "tanh": (np.tanh, lambda x: 1 - np.tanh(x) ** 2),
    "leaky_relu": (lambda x: np.where(x > 0, x, LEAKY_SLOPE * x),
                   lambda x: np.where(x > 0, 1.0, LEAKY_SLOPE).astype(x.dtype)),
    # exact GELU (torch default): x * Phi(x); derivative Phi(x) + x * phi(x)
    "gelu": (lambda x: 0.5 * x * (1 + erf(x / _SQRT2)),
             lambda x: 0.5 * (1 + erf(x / _SQRT2)) + x * _INV_SQRT_2PI * np.exp(-0.5 * x * x)),
}


def _lookup(name: str):
    if name not in ACTIVATIONS:
        raise ValueError(f"unknown activation {name!r}; known: {', '.join(ACTIVATIONS)}")
    return ACTIVATIONS[name]


def activation(name: str, x: np.ndarray) -> np.ndarray:
    """f(x) for a named activation."""
    return _lookup(name)[0](x)


def activation_grad(name: str, x: np.ndarray) -> np.ndarray:
    """f'(x) for a named activation (the hand-derived derivative, elementwise)."""
    return _lookup(name)[1](x)


class ActivationLayer(Layer):
    """Elementwise nonlinearity. Backward is grad_out * f'(x); ReLU takes an in-place fast path."""

    def __init__(self, name: str = "relu"):
        super().__init__()
        _lookup(name)
        self.name = name

    def forward(self, x):
        if not isinstance(x, np.ndarray):
            raise ValueError(f"ActivationLayer: expected a numpy array, got {type(x).__name__}")
        if self.name == "relu":
            self.out = np.maximum(x, 0)          # keep the output: f'(x) = [out > 0]
            return self.out
        self.x = x
        return activation(self.name, x)

    def backward(self, grad_out):
        if self.name == "relu":
            grad_out *= self.out > 0             # in place: the incoming buffer is ours to reuse
            return grad_out
        return grad_out * activation_grad(self.name, self.x)

    def __repr__(self):
        return f"ActivationLayer({self.name!r})"
