"""The one contract every layer follows: `forward(x)` caches what `backward` needs,
`backward(grad_out)` fills `self.grads` and returns the gradient with respect to the input."""
from __future__ import annotations

import numpy as np


class Layer:
    """Base class: parameters live in `self.params`, their gradients (same keys, same shapes) in `self.grads`.

    `training` switches train/eval behaviour (dropout, batch norm). Optimizers update `params` in place,
    so the arrays are allocated once and never replaced.
    """

    def __init__(self):
        self.params: dict[str, np.ndarray] = {}
        self.grads: dict[str, np.ndarray] = {}
        self.training = True

    def forward(self, x: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def backward(self, grad_out: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def __call__(self, x: np.ndarray) -> np.ndarray:
        return self.forward(x)

    def astype(self, dtype) -> "Layer":
        """Cast parameters (and gradient buffers) to `dtype`, e.g. float64 for a gradient check."""
        for k in self.params:
            self.params[k] = self.params[k].astype(dtype)
            self.grads[k] = np.zeros_like(self.params[k])
        return self

    def __repr__(self) -> str:
        shapes = ", ".join(f"{k}{tuple(v.shape)}" for k, v in self.params.items())
        return f"{type(self).__name__}({shapes})"


def check_2d(x: np.ndarray, features: int | None, who: str) -> None:
    """Raise a clear ValueError unless `x` is (N, features)."""
    if not isinstance(x, np.ndarray) or x.ndim != 2 or (features is not None and x.shape[1] != features):
        shape = getattr(x, "shape", type(x).__name__)
        raise ValueError(f"{who}: expected input of shape (N, {features if features is not None else 'D'}), "
                         f"got {shape}")
