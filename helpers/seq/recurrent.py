"""The unrolling loop every recurrent layer shares: a cell applied step by step, layer by layer.

Parameters carry torch's names and shapes (`weight_ih_l0` (G·H, I), `weight_hh_l0` (G·H, H), `bias_ih_l0`,
`bias_hh_l0`, G = gates per cell) and torch's init U(-1/√H, 1/√H), so `ours.load_state_dict(torch_rnn.state_dict())`
copies the weights of a `torch.nn.RNN/LSTM/GRU(batch_first=True)` and the two must agree to rounding.
Subclasses only say how many gates they have and what one step computes (`cell`).
"""
from __future__ import annotations

import math

import torch
from torch import nn


def check_lengths(lengths, batch: int, steps: int) -> torch.Tensor:
    """Validate per-sequence lengths (B,): integers in [1, T]; a clear error instead of silent garbage."""
    lengths = torch.as_tensor(lengths)
    if lengths.dim() != 1 or len(lengths) != batch:
        raise ValueError(f"lengths must have one entry per sequence: shape {tuple(lengths.shape)} for a batch of {batch}")
    if lengths.dtype.is_floating_point:
        raise ValueError("lengths must be integers")
    if int(lengths.min()) < 1 or int(lengths.max()) > steps:
        raise ValueError(f"lengths must lie in [1, {steps}] (the padded length); got min {int(lengths.min())}, "
                         f"max {int(lengths.max())}")
    return lengths


class Recurrent(nn.Module):
    """A (multi-layer) recurrent layer: x (B, T, I) → outputs (B, T, H) and the final state of each layer."""

    gates = 1  # G: rows of weight_ih per hidden unit (RNN 1, GRU 3, LSTM 4)

    def __init__(self, input_size: int, hidden_size: int, num_layers: int = 1):
        super().__init__()
        if min(input_size, hidden_size, num_layers) < 1:
            raise ValueError("input_size, hidden_size and num_layers must be positive")
        self.input_size, self.hidden_size, self.num_layers = input_size, hidden_size, num_layers
        G, H = self.gates, hidden_size
        for layer in range(num_layers):
            fan_in = input_size if layer == 0 else H
            self.register_parameter(f"weight_ih_l{layer}", nn.Parameter(torch.empty(G * H, fan_in)))
            self.register_parameter(f"weight_hh_l{layer}", nn.Parameter(torch.empty(G * H, H)))
            self.register_parameter(f"bias_ih_l{layer}", nn.Parameter(torch.empty(G * H)))
            self.register_parameter(f"bias_hh_l{layer}", nn.Parameter(torch.empty(G * H)))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        bound = 1.0 / math.sqrt(self.hidden_size)  # torch's init for every recurrent weight and bias
        for p in self.parameters():
            nn.init.uniform_(p, -bound, bound)

    def weights(self, layer: int) -> tuple[torch.Tensor, ...]:
        """(W_ih, W_hh, b_ih, b_hh) of one layer."""
        return tuple(getattr(self, f"{n}_l{layer}") for n in ("weight_ih", "weight_hh", "bias_ih", "bias_hh"))

    # --- what a subclass defines ------------------------------------------------------------------------------
    def cell(self, x: torch.Tensor, state, W_ih, W_hh, b_ih, b_hh):
        """One time step: x (B, I), state → new state."""
        raise NotImplementedError

    def zero_state(self, batch: int, like: torch.Tensor):
        return like.new_zeros(batch, self.hidden_size)  # (B, H)

    @staticmethod
    def hidden(state) -> torch.Tensor:
        """The part of the state that is the layer's output h (B, H)."""
        return state

    # --- the loop -----------------------------------------------------------------------------------------------
    def step(self, x: torch.Tensor, state, layer: int = 0):
        """Advance one layer by one time step."""
        return self.cell(x, state, *self.weights(layer))

    def forward(self, x: torch.Tensor, state=None, lengths=None):
        """x (B, T, I), optional initial state per layer, optional lengths (B,) → (out (B, T, H), final states).

        With `lengths`, sequence b stops updating after lengths[b] steps: its final state is the state at its own
        last step and its outputs past that step are zero (what `pack_padded_sequence` gives torch).
        """
        if x.dim() != 3 or x.shape[-1] != self.input_size:
            raise ValueError(f"expected input (B, T, {self.input_size}), got {tuple(x.shape)}")
        B, T, _ = x.shape
        mask = None
        if lengths is not None:
            lengths = check_lengths(lengths, B, T).to(x.device)
            mask = (torch.arange(T, device=x.device)[None, :] < lengths[:, None]).to(x.dtype)  # (B, T)
        finals = []
        for layer in range(self.num_layers):
            s = self.zero_state(B, x) if state is None else state[layer]
            outs = []
            for t in range(T):
                new = self.step(x[:, t], s, layer)
                if mask is not None:  # finished sequences keep their state
                    m = mask[:, t, None]  # (B, 1)
                    new = _blend(new, s, m)
                s = new
                h = self.hidden(s)  # (B, H)
                outs.append(h if mask is None else h * mask[:, t, None])
            x = torch.stack(outs, 1)  # (B, T, H): the next layer's input
            finals.append(s)
        return x, self.stack_states(finals)

    @staticmethod
    def stack_states(finals):
        return torch.stack(finals)  # (L, B, H)


def _blend(new, old, m):
    """m·new + (1−m)·old, for a state that is a tensor or a tuple of tensors."""
    if isinstance(new, tuple):
        return tuple(_blend(a, b, m) for a, b in zip(new, old))
    return m * new + (1 - m) * old
