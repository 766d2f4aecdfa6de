"""The GRU cell (Cho et al. 2014): two gates, no separate cell state; torch's gate order (r, z, n).

    r = σ(W_ir x + b_ir + W_hr h + b_hr)          reset gate
    z = σ(W_iz x + b_iz + W_hz h + b_hz)          update gate
    n = tanh(W_in x + b_in + r ⊙ (W_hn h + b_hn))  candidate (the reset gate scales the recurrent part)
    h' = (1 − z) ⊙ n + z ⊙ h                       interpolation: z ≈ 1 copies h forward unchanged
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from .recurrent import Recurrent


def gru_cell(x, h, W_ih, W_hh, b_ih, b_hh):
    """x (B, I), h (B, H) → h' (B, H)."""
    xr, xz, xn = F.linear(x, W_ih, b_ih).chunk(3, dim=1)  # each (B, H)
    hr, hz, hn = F.linear(h, W_hh, b_hh).chunk(3, dim=1)
    r = torch.sigmoid(xr + hr)
    z = torch.sigmoid(xz + hz)
    n = torch.tanh(xn + r * hn)
    return (1 - z) * n + z * h


class GRU(Recurrent):
    """Multi-layer GRU, batch first; the same parameters as `torch.nn.GRU(batch_first=True)`."""

    gates = 3

    def cell(self, x, h, W_ih, W_hh, b_ih, b_hh):
        return gru_cell(x, h, W_ih, W_hh, b_ih, b_hh)
