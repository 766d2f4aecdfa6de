"""The LSTM cell (Hochreiter & Schmidhuber 1997, with the forget gate of Gers et al. 2000).

Four gates from one matrix product each for x and h, in torch's order (i, f, g, o):
    i = σ(·) input gate, f = σ(·) forget gate, g = tanh(·) candidate, o = σ(·) output gate
    c' = f ⊙ c + i ⊙ g          the cell state: an additive path, so ∂c'/∂c = f (no squashing)
    h' = o ⊙ tanh(c')
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from .recurrent import Recurrent


def lstm_cell(x, state, W_ih, W_hh, b_ih, b_hh):
    """x (B, I), state (h, c) each (B, H) → (h', c')."""
    h, c = state
    gates = F.linear(x, W_ih, b_ih) + F.linear(h, W_hh, b_hh)  # (B, 4H)
    i, f, g, o = gates.chunk(4, dim=1)  # each (B, H)
    c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
    h = torch.sigmoid(o) * torch.tanh(c)
    return h, c


class LSTM(Recurrent):
    """Multi-layer LSTM, batch first; the same parameters as `torch.nn.LSTM(batch_first=True)`.

    The state is (h, c); `forward` returns (out (B, T, H), (h_n, c_n)) with h_n, c_n of shape (L, B, H), like torch.
    """

    gates = 4

    def cell(self, x, state, W_ih, W_hh, b_ih, b_hh):
        return lstm_cell(x, state, W_ih, W_hh, b_ih, b_hh)

    def zero_state(self, batch, like):
        z = like.new_zeros(batch, self.hidden_size)
        return z, z

    @staticmethod
    def hidden(state):
        return state[0]

    @staticmethod
    def stack_states(finals):
        return torch.stack([h for h, _ in finals]), torch.stack([c for _, c in finals])

    def forward(self, x, state=None, lengths=None):
        if state is not None:  # torch's (h0, c0), each (L, B, H) → one (h, c) per layer
            h0, c0 = state
            state = [(h0[layer], c0[layer]) for layer in range(self.num_layers)]
        return super().forward(x, state, lengths)
