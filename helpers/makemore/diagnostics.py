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


def layer_names(model: Sequential) -> list[str]:
    """A readable name per layer, counted within its type: 'Embedding', 'Linear 1', 'BatchNorm1d 1', 'Tanh 1', …"""
    kinds = [type(layer).__name__ for layer in model.layers]
    seen: dict[str, int] = {}
    names = []
    for k in kinds:
        seen[k] = seen.get(k, 0) + 1
        names.append(k if kinds.count(k) == 1 else f"{k} {seen[k]}")
    return names


def plot_tanh_histograms(ax, model: Sequential, grads: bool = False, title: str = "") -> None:
    """Histogram of each tanh layer's outputs (or of their gradients), one line per layer ('Tanh 1', …)."""
    for layer, name in zip(model.layers, layer_names(model)):
        if isinstance(layer, Tanh):
            t = (layer.out.grad if grads else layer.out).detach().flatten().cpu()
            hy, hx = torch.histogram(t, bins=50, density=True)
            ax.plot(((hx[:-1] + hx[1:]) / 2).numpy(), hy.numpy(), label=name)
    ax.set_title(title or ("tanh gradient" if grads else "tanh output"))
    ax.set_xlabel("tanh gradient" if grads else "tanh output")
    ax.set_ylabel("density")
