"""How far back does a gradient reach? ‖∂h_T/∂h_t‖ for every t, by unrolling a one-layer cell and asking autograd.

‖∂h_T/∂h_t‖_F is the norm of a product of T − t step Jacobians. For a vanilla RNN each factor is
diag(1 − h²) W_hh, whose norm is typically < 1 at init: the product shrinks geometrically. The LSTM's cell
state and the GRU's update gate add near-identity paths, so the product decays far more slowly.
"""
from __future__ import annotations

import torch


def state_jacobian_norms(layer, x: torch.Tensor) -> torch.Tensor:
    """layer: a one-layer `Recurrent`; x (B, T, I) → (T,) batch mean of ‖∂h_T/∂h_t‖_F / √H, t = 1..T (1 at t = T)."""
    B, T, _ = x.shape
    state = layer.zero_state(B, x)
    hs = []
    for t in range(T):
        state = layer.step(x[:, t], state)
        h = layer.hidden(state)
        h.retain_grad()
        hs.append(h)
    H = hs[-1].shape[-1]
    sq = torch.zeros(T, B, dtype=x.dtype)
    for j in range(H):  # one backward pass per output unit: the rows of the Jacobian
        grads = torch.autograd.grad(hs[-1][:, j].sum(), hs, retain_graph=True, allow_unused=True)
        for t, g in enumerate(grads):
            if g is not None:
                sq[t] += (g ** 2).sum(-1)  # (B,)
    return (sq.sqrt() / H ** 0.5).mean(1)  # (T,)
