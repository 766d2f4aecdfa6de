"""Gradient checking: compare backward() with central finite differences, in float64.

For a layer f we check the scalar L = sum(f(x) * R) with a fixed random R, so dL/df = R exercises
every output. Central differences (L(x+h) - L(x-h)) / 2h have O(h^2) error; with h = 1e-6 in float64
the relative error of a correct backward is ~1e-9, and a wrong one is ~1.
"""
from __future__ import annotations

import numpy as np


def rel_error(a: np.ndarray, b: np.ndarray) -> float:
    """||a - b|| / max(||a|| + ||b||, tiny): scale-free, and safe where gradients are zero."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(np.linalg.norm(a - b) / max(np.linalg.norm(a) + np.linalg.norm(b), 1e-300))


def numerical_grad(f, x: np.ndarray, h: float = 1e-6) -> np.ndarray:
    """dF/dx of a scalar function F by central differences, perturbing `x` in place one entry at a time."""
    grad = np.zeros_like(x, dtype=np.float64)
    it = np.nditer(x, flags=["multi_index"])
    for _ in it:
        i = it.multi_index
        old = x[i]
        x[i] = old + h
        fp = f()
        x[i] = old - h
        fm = f()
        x[i] = old
        grad[i] = (fp - fm) / (2 * h)
    return grad


def _sublayers(layer):
    return getattr(layer, "layers", [layer])     # a Network is checked through its layers


def _fresh_forward(layer, x, seed):
    for sub in _sublayers(layer):
        if hasattr(sub, "rng"):                  # stochastic layers: the same dropout mask every call
            sub.rng = np.random.default_rng(seed)
    return layer.forward(x)


def grad_check(layer, x: np.ndarray, seed: int = 0, h: float = 1e-6) -> dict:
    """Relative error of the analytic gradients of `layer` (inputs and every parameter) vs central
    differences. The layer is cast to float64 first. Returns {'x': err, 'W': err, ...}."""
    if x.dtype != np.float64:
        raise ValueError(f"grad_check needs float64 inputs (float32 differences are too noisy), got {x.dtype}")
    layer.astype(np.float64)
    for sub in _sublayers(layer):
        if hasattr(sub, "input_grad"):
            sub.input_grad = True                # also check dL/dx of a network's first layer
    rng = np.random.default_rng(seed)
    R = rng.standard_normal(_fresh_forward(layer, x, seed).shape)

    def L():
        return float(np.sum(_fresh_forward(layer, x, seed) * R))

    _fresh_forward(layer, x, seed)
    dx = layer.backward(R.copy())                   # copy: some backward passes work in place
    errors = {}
    if dx is not None:
        errors["x"] = rel_error(dx, numerical_grad(L, x, h))
    named = [(f"{i}.{k}" if len(_sublayers(layer)) > 1 else k, sub.params[k], sub.grads[k].copy())
             for i, sub in enumerate(_sublayers(layer)) for k in sub.params]
    for name, p, analytic in named:
        errors[name] = rel_error(analytic, numerical_grad(L, p, h))
    return errors


def loss_grad_check(loss, pred: np.ndarray, target, h: float = 1e-6) -> float:
    """Relative error of loss.backward() vs central differences of loss.forward (float64)."""
    if pred.dtype != np.float64:
        raise ValueError(f"loss_grad_check needs float64 predictions, got {pred.dtype}")
    loss.forward(pred, target)
    analytic = loss.backward()
    return rel_error(analytic, numerical_grad(lambda: loss.forward(pred, target), pred, h))
