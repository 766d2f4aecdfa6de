"""Karpathy's torch-ified layers (Lectures 4 and 6): plain tensors and explicit maths, like torch.nn.

Each layer keeps its last output in `.out` so the diagnostics of Lecture 4 (activation and gradient
histograms, saturation, update/data ratios) can look inside a trained network. `training` switches
BatchNorm between batch statistics and its running averages.
"""
from __future__ import annotations

import torch


class Linear:
    """x @ W + b, with W ~ N(0, 1) * gain / sqrt(fan_in) (Kaiming: gain 5/3 before a tanh, 1 before nothing)."""

    def __init__(self, fan_in: int, fan_out: int, bias: bool = True, gain: float = 1.0,
                 generator: torch.Generator | None = None):
        self.weight = torch.randn((fan_in, fan_out), generator=generator) * gain / fan_in ** 0.5
        self.bias = torch.zeros(fan_out) if bias else None

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[-1] != self.weight.shape[0]:
            raise ValueError(f"Linear expects last dim {self.weight.shape[0]}, got shape {tuple(x.shape)}")
        self.out = x @ self.weight  # (..., fan_out)
        if self.bias is not None:
            self.out = self.out + self.bias
        return self.out

    def parameters(self) -> list[torch.Tensor]:
        return [self.weight] + ([] if self.bias is None else [self.bias])


class BatchNorm1d:
    """Normalise each feature over the batch (and the time axis of a (B, T, C) input), then scale and shift.

    Training uses the batch mean and (unbiased, as in Karpathy's code) variance and updates running
    averages; evaluation uses the running averages, so one example's output does not depend on the others.
    """

    def __init__(self, dim: int, eps: float = 1e-5, momentum: float = 0.1):
        self.eps, self.momentum, self.training = eps, momentum, True
        self.gamma, self.beta = torch.ones(dim), torch.zeros(dim)  # trained
        self.running_mean, self.running_var = torch.zeros(dim), torch.ones(dim)  # buffers

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        if x.ndim not in (2, 3):
            raise ValueError(f"BatchNorm1d expects (B, C) or (B, T, C), got shape {tuple(x.shape)}")
        if self.training:
            dims = 0 if x.ndim == 2 else (0, 1)
            xmean = x.mean(dims, keepdim=True)  # (1, C) or (1, 1, C)
            xvar = x.var(dims, keepdim=True)
            with torch.no_grad():
                m = self.momentum
                self.running_mean = (1 - m) * self.running_mean + m * xmean.flatten()
                self.running_var = (1 - m) * self.running_var + m * xvar.flatten()
        else:
            xmean, xvar = self.running_mean, self.running_var
        xhat = (x - xmean) / torch.sqrt(xvar + self.eps)
        self.out = self.gamma * xhat + self.beta
        return self.out

    def parameters(self) -> list[torch.Tensor]:
        return [self.gamma, self.beta]


class Tanh:
    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        self.out = torch.tanh(x)
        return self.out

    def parameters(self) -> list[torch.Tensor]:
        return []


class Embedding:
    """A learned vector per token: (B, T) int -> (B, T, dim)."""

    def __init__(self, num_embeddings: int, dim: int, generator: torch.Generator | None = None):
        self.weight = torch.randn((num_embeddings, dim), generator=generator)

    def __call__(self, ix: torch.Tensor) -> torch.Tensor:
        self.out = self.weight[ix]
        return self.out

    def parameters(self) -> list[torch.Tensor]:
        return [self.weight]


class FlattenConsecutive:
    """(B, T, C) -> (B, T/n, C*n): concatenate each group of n consecutive vectors (drops T when T/n = 1).

    n = T flattens the whole context (the MLP); n = 2, applied three times to 8 characters, fuses
    neighbours pairwise (the WaveNet tree).
    """

    def __init__(self, n: int):
        self.n = n

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        B, T, C = x.shape
        if T % self.n:
            raise ValueError(f"FlattenConsecutive({self.n}) needs T divisible by {self.n}, got T={T}")
        x = x.reshape(B, T // self.n, C * self.n)
        self.out = x.squeeze(1) if x.shape[1] == 1 else x
        return self.out

    def parameters(self) -> list[torch.Tensor]:
        return []


class Sequential:
    def __init__(self, layers: list):
        self.layers = layers

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        for layer in self.layers:
            x = layer(x)
        self.out = x
        return x

    def parameters(self) -> list[torch.Tensor]:
        return [p for layer in self.layers for p in layer.parameters()]

    def train(self, mode: bool = True) -> "Sequential":
        """Switch every BatchNorm to batch statistics (mode=True) or running averages (False)."""
        for layer in self.layers:
            if isinstance(layer, BatchNorm1d):
                layer.training = mode
        return self

    def eval(self) -> "Sequential":
        return self.train(False)

    def num_params(self) -> int:
        return sum(p.numel() for p in self.parameters())

    @property
    def device(self) -> torch.device:
        return self.parameters()[0].device

    def to(self, device) -> "Sequential":
        """Move every layer's tensors (weights and BatchNorm buffers) to `device`, in place; trained
        tensors stay leaves that require grad. A no-op when they are there already."""
        device = torch.device(device)
        for layer in self.layers:
            for name, t in list(vars(layer).items()):
                if isinstance(t, torch.Tensor) and name != "out" and t.device != device:
                    setattr(layer, name, t.detach().to(device).requires_grad_(t.requires_grad))
        return self
