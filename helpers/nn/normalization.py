"""Batch normalization (statistics over the batch, per feature) and layer normalization (statistics
over the features, per sample), with their backward passes derived by hand."""
from __future__ import annotations

import numpy as np

from .layer import Layer, check_2d


def _norm_backward(g_xhat: np.ndarray, xhat: np.ndarray, inv_std: np.ndarray, axis: int) -> np.ndarray:
    """dL/dx of xhat = (x - mean) * inv_std when mean and var are computed along `axis` (n values).

    dx = inv_std / n * (n * g - sum(g) - xhat * sum(g * xhat)): the two sums are the gradient
    flowing through the mean and through the variance.
    """
    n = xhat.shape[axis]
    s1 = g_xhat.sum(axis=axis, keepdims=True)
    s2 = (g_xhat * xhat).sum(axis=axis, keepdims=True)
    dx = g_xhat * n
    dx -= s1
    dx -= xhat * s2
    dx *= inv_std / n
    return dx


class BatchNormLayer(Layer):
    """`torch.nn.BatchNorm1d` semantics: normalize each feature with the batch mean and *biased*
    variance in training; keep running averages (momentum 0.1) with the *unbiased* variance for
    eval, as torch does; learnable scale `gamma` and shift `beta`."""

    def __init__(self, n_features: int, momentum: float = 0.1, eps: float = 1e-5, dtype=np.float32):
        super().__init__()
        if n_features <= 0:
            raise ValueError(f"BatchNormLayer needs n_features > 0, got {n_features}")
        self.params = {"gamma": np.ones(n_features, dtype), "beta": np.zeros(n_features, dtype)}
        self.grads = {k: np.zeros_like(v) for k, v in self.params.items()}
        self.running_mean = np.zeros(n_features, dtype)
        self.running_var = np.ones(n_features, dtype)
        self.momentum, self.eps = momentum, eps

    def astype(self, dtype):
        super().astype(dtype)
        self.running_mean = self.running_mean.astype(dtype)
        self.running_var = self.running_var.astype(dtype)
        return self

    def forward(self, x):
        check_2d(x, self.params["gamma"].shape[0], "BatchNormLayer")
        if self.training:
            n = x.shape[0]
            if n < 2:
                raise ValueError(f"BatchNormLayer in training needs a batch of at least 2, got {n}")
            mean = x.sum(axis=0) * (1.0 / n)                # (D,)  (sum is ~5x faster than mean here)
            xc = x - mean                                   # (N, D)
            var = np.square(xc).sum(axis=0) * (1.0 / n)     # (D,) biased: used to normalize
            m = self.momentum
            self.running_mean *= 1 - m
            self.running_mean += m * mean
            self.running_var *= 1 - m
            self.running_var += m * var * (n / (n - 1))     # unbiased, like torch
        else:
            xc = x - self.running_mean
            var = self.running_var
        self.inv_std = 1.0 / np.sqrt(var + self.eps)        # (D,)
        xc *= self.inv_std
        self.xhat = xc                                      # (N, D)
        out = self.xhat * self.params["gamma"]
        out += self.params["beta"]
        return out

    def backward(self, grad_out):
        np.sum(grad_out * self.xhat, axis=0, out=self.grads["gamma"])
        np.sum(grad_out, axis=0, out=self.grads["beta"])
        g = grad_out * self.params["gamma"]                 # dL/dxhat
        if not self.training:                               # statistics are constants in eval
            return g * self.inv_std
        return _norm_backward(g, self.xhat, self.inv_std, axis=0)

    def __repr__(self):
        return f"BatchNormLayer({self.params['gamma'].shape[0]})"


class LayerNormLayer(Layer):
    """`torch.nn.LayerNorm(D)`: normalize each sample over its D features (no running statistics,
    same behaviour in train and eval), then scale and shift per feature."""

    def __init__(self, n_features: int, eps: float = 1e-5, dtype=np.float32):
        super().__init__()
        if n_features <= 0:
            raise ValueError(f"LayerNormLayer needs n_features > 0, got {n_features}")
        self.params = {"gamma": np.ones(n_features, dtype), "beta": np.zeros(n_features, dtype)}
        self.grads = {k: np.zeros_like(v) for k, v in self.params.items()}
        self.eps = eps

    def forward(self, x):
        check_2d(x, self.params["gamma"].shape[0], "LayerNormLayer")
        xc = x - x.mean(axis=1, keepdims=True)               # (N, D)
        self.inv_std = 1.0 / np.sqrt(np.mean(xc * xc, axis=1, keepdims=True) + self.eps)  # (N, 1)
        self.xhat = xc * self.inv_std
        return self.xhat * self.params["gamma"] + self.params["beta"]

    def backward(self, grad_out):
        np.sum(grad_out * self.xhat, axis=0, out=self.grads["gamma"])
        np.sum(grad_out, axis=0, out=self.grads["beta"])
        return _norm_backward(grad_out * self.params["gamma"], self.xhat, self.inv_std, axis=1)

    def __repr__(self):
        return f"LayerNormLayer({self.params['gamma'].shape[0]})"
