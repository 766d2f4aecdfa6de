"""`LinearLayer`: y = x W + b, one matmul forward, two backward (one when the input needs no gradient)."""
from __future__ import annotations

import numpy as np

from .layer import Layer, check_2d


class LinearLayer(Layer):
    """Fully connected layer. W is (in, out) so the forward pass is `x @ W` with no transpose.

    Init: Kaiming-uniform like `torch.nn.Linear` (U(-1/sqrt(in), 1/sqrt(in)) for W and b), so a PyTorch
    twin started from the same numbers behaves the same. `input_grad=False` skips dL/dx (first layer).
    """

    def __init__(self, n_in: int, n_out: int, rng: np.random.Generator | None = None,
                 dtype=np.float32, input_grad: bool = True):
        super().__init__()
        if n_in <= 0 or n_out <= 0:
            raise ValueError(f"LinearLayer sizes must be positive, got ({n_in}, {n_out})")
        rng = rng if rng is not None else np.random.default_rng(0)
        bound = 1.0 / np.sqrt(n_in)
        self.params["W"] = rng.uniform(-bound, bound, (n_in, n_out)).astype(dtype)  # (in, out)
        self.params["b"] = rng.uniform(-bound, bound, n_out).astype(dtype)          # (out,)
        self.grads = {k: np.zeros_like(v) for k, v in self.params.items()}
        self.input_grad = input_grad

    def forward(self, x):
        check_2d(x, self.params["W"].shape[0], "LinearLayer")
        self.x = x                                   # (N, in), kept for dW
        out = x @ self.params["W"]                   # (N, out)
        out += self.params["b"]
        return out

    def backward(self, grad_out):
        W = self.params["W"]
        np.matmul(self.x.T, grad_out, out=self.grads["W"])   # (in, out)
        np.sum(grad_out, axis=0, out=self.grads["b"])        # (out,)
        return grad_out @ W.T if self.input_grad else None   # (N, in)
