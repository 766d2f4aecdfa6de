"""A bidirectional layer: one recurrent layer reads left to right, another right to left; outputs concatenated.

Position t then sees the whole sequence: the forward half summarises x_1..x_t, the backward half x_t..x_T.
With padding, the backward layer must start at each sequence's own last token, not at the padding: we
reverse each sequence within its length.
"""
from __future__ import annotations

import torch
from torch import nn

from .recurrent import check_lengths


def reverse_padded(x: torch.Tensor, lengths: torch.Tensor | None) -> torch.Tensor:
    """Reverse x (B, T, …) along time within each sequence's length; padding stays at the end."""
    B, T = x.shape[:2]
    if lengths is None:
        return x.flip(1)
    t = torch.arange(T, device=x.device)[None, :]  # (1, T)
    idx = torch.where(t < lengths[:, None], lengths[:, None] - 1 - t, t)  # (B, T)
    return x.gather(1, idx.view(B, T, *([1] * (x.dim() - 2))).expand_as(x))


class Bidirectional(nn.Module):
    """Wrap two one-layer recurrent layers (ours or torch's in spirit): x (B, T, I) → (B, T, 2H).

    `make_layer()` builds one direction; both directions get their own parameters.
    """

    def __init__(self, make_layer):
        super().__init__()
        self.fwd, self.bwd = make_layer(), make_layer()
        if getattr(self.fwd, "num_layers", 1) != 1:
            raise ValueError("Bidirectional wraps one-layer recurrent layers")

    def forward(self, x, lengths=None):
        if lengths is not None:
            lengths = check_lengths(lengths, x.shape[0], x.shape[1]).to(x.device)
        out_f, h_f = self.fwd(x, lengths=lengths)  # (B, T, H)
        out_b, h_b = self.bwd(reverse_padded(x, lengths), lengths=lengths)
        out = torch.cat([out_f, reverse_padded(out_b, lengths)], dim=-1)  # (B, T, 2H)
        return out, (h_f, h_b)

    def load_torch(self, module: nn.Module) -> "Bidirectional":
        """Copy the weights of a one-layer `torch.nn.RNN/LSTM/GRU(bidirectional=True)`."""
        sd = module.state_dict()
        self.fwd.load_state_dict({k: v for k, v in sd.items() if not k.endswith("_reverse")})
        self.bwd.load_state_dict({k[:-len("_reverse")]: v for k, v in sd.items() if k.endswith("_reverse")})
        return self
