"""Lecture 4's instruments: look at every tanh layer's activations and gradients, and at the weights' grad/data ratio.

A healthy deep net at init has tanh outputs neither collapsing to 0 (vanishing) nor piling up at
+-1 (saturated: the local gradient 1 - t^2 is ~0, so the layer stops learning), gradients of similar
size in every layer, and updates about 1e-3 of the data they change.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from .layers import Sequential, Tanh

SATURATED = 0.97  # |tanh| above this passes less than 6% of the gradient


def probe(model: Sequential, Xb: torch.Tensor, Yb: torch.Tensor) -> float:
    """One forward + backward pass with the layer outputs' gradients kept (for `tanh_stats`); returns the loss."""
    logits = model(Xb)
    for layer in model.layers:
        layer.out.retain_grad()
    loss = F.cross_entropy(logits, Yb)
    for p in model.parameters():
        p.grad = None
    loss.backward()
    return loss.item()


def tanh_stats(model: Sequential) -> list[dict]:
    """Per tanh layer (after `probe`): mean, std, % saturated of the activations, std of their gradient."""
    rows = []
    for i, layer in enumerate(model.layers):
        if isinstance(layer, Tanh):
            t = layer.out.detach()
            g = layer.out.grad
            rows.append({"layer": i, "mean": t.mean().item(), "std": t.std().item(),
                         "saturated": (t.abs() > SATURATED).float().mean().item(),
                         "grad_std": float("nan") if g is None else g.std().item()})
    return rows


def grad_data_ratios(model: Sequential) -> list[dict]:
    """Per 2-D weight: std(grad) / std(weight); a layer far above the others learns too fast."""
    return [{"shape": tuple(p.shape), "ratio": (p.grad.std() / p.data.std()).item()}
            for p in model.parameters() if p.ndim == 2 and p.grad is not None]


def plot_tanh_histograms(ax, model: Sequential, grads: bool = False, title: str = "") -> None:
    """Histogram of each tanh layer's outputs (or of their gradients), one line per layer."""
    for i, layer in enumerate(model.layers):
        if isinstance(layer, Tanh):
            t = (layer.out.grad if grads else layer.out).detach().flatten()
            hy, hx = torch.histogram(t, bins=50, density=True)
            ax.plot(((hx[:-1] + hx[1:]) / 2).numpy(), hy.numpy(), label=f"layer {i}")
    ax.set_title(title or ("tanh gradient" if grads else "tanh output"))
