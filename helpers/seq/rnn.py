"""The vanilla (Elman) RNN: h_t = tanh(W_ih x_t + b_ih + W_hh h_{t-1} + b_hh), and its backward pass by hand.

`rnn_bptt` is backpropagation through time written out: walk the unrolled graph from t = T down to 1,
carrying dL/dh_t; at each step the tanh derivative (1 − h_t²) gates the signal before it flows into the
weights and back into h_{t-1} through W_hh — the product of those Jacobians is why gradients vanish or explode.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from .recurrent import Recurrent


def rnn_cell(x, h, W_ih, W_hh, b_ih, b_hh, nonlinearity: str = "tanh"):
    """x (B, I), h (B, H) → h' (B, H)."""
    a = F.linear(x, W_ih, b_ih) + F.linear(h, W_hh, b_hh)  # (B, H) pre-activation
    return torch.tanh(a) if nonlinearity == "tanh" else torch.relu(a)


class RNN(Recurrent):
    """Multi-layer Elman RNN, batch first; the same parameters as `torch.nn.RNN(batch_first=True)`."""

    gates = 1

    def __init__(self, input_size: int, hidden_size: int, num_layers: int = 1, nonlinearity: str = "tanh"):
        if nonlinearity not in ("tanh", "relu"):
            raise ValueError(f"nonlinearity must be 'tanh' or 'relu', got {nonlinearity!r}")
        self.nonlinearity = nonlinearity
        super().__init__(input_size, hidden_size, num_layers)

    def cell(self, x, h, W_ih, W_hh, b_ih, b_hh):
        return rnn_cell(x, h, W_ih, W_hh, b_ih, b_hh, self.nonlinearity)


def rnn_forward(x, h0, W_ih, W_hh, b_ih, b_hh):
    """Unroll a one-layer tanh RNN: x (B, T, I), h0 (B, H) → hs (B, T+1, H) with hs[:, 0] = h0."""
    hs = [h0]
    for t in range(x.shape[1]):
        hs.append(rnn_cell(x[:, t], hs[-1], W_ih, W_hh, b_ih, b_hh))
    return torch.stack(hs, 1)


def rnn_bptt(x, hs, dhs, W_ih, W_hh):
    """Gradients of a loss L through a one-layer tanh RNN, by hand.

    x (B, T, I) inputs, hs (B, T+1, H) from `rnn_forward`, dhs (B, T, H) = ∂L/∂h_t from the layers above
    (the direct gradient at each output). Returns dict of dW_ih, dW_hh, db_ih, db_hh and dh0, dx.
    """
    B, T, _ = x.shape
    dW_ih, dW_hh = torch.zeros_like(W_ih), torch.zeros_like(W_hh)
    db = torch.zeros(W_hh.shape[0], dtype=x.dtype)
    dx = torch.zeros_like(x)
    dh_next = torch.zeros_like(hs[:, 0])  # ∂L/∂h_t arriving from step t+1
    for t in reversed(range(T)):
        dh = dhs[:, t] + dh_next  # (B, H) total gradient at h_{t+1} (hs index t+1)
        da = dh * (1 - hs[:, t + 1] ** 2)  # (B, H) through tanh
        dW_ih += da.T @ x[:, t]
        dW_hh += da.T @ hs[:, t]
        db += da.sum(0)
        dx[:, t] = da @ W_ih
        dh_next = da @ W_hh  # (B, H) into h_t
    return {"W_ih": dW_ih, "W_hh": dW_hh, "b_ih": db, "b_hh": db.clone(), "h0": dh_next, "x": dx}
