"""Where a token sits: three ways to tell a transformer (Module 0.5).

Attention is permutation-equivariant — shuffle the tokens and the outputs shuffle the same way — so order
must be injected. Three families:
    sinusoidal (Vaswani et al. 2017)  PE[t, 2i] = sin(t / 10000^(2i/d)),  PE[t, 2i+1] = cos(t / 10000^(2i/d)),
                                      added to the token embeddings; defined for every t, nothing learned
    learned (BERT, GPT-2)             one trained vector per position, added; undefined past the table
    ALiBi (Press et al. 2022)         nothing added to the embeddings; each head h subtracts m_h · |i − j|
                                      from the attention score of query i on key j (a relative scheme):
                                      the same bias at every length, so it extrapolates ("train short, test long")
"""
from __future__ import annotations

import math

import torch
from torch import nn


def sinusoidal(n_positions: int, d_model: int) -> torch.Tensor:
    """The (T, d) table of Vaswani et al.: even columns sin(t·ω_i), odd columns cos(t·ω_i), ω_i = 10000^(−2i/d)."""
    if d_model % 2:
        raise ValueError(f"sinusoidal encoding needs an even d_model, got {d_model}")
    t = torch.arange(n_positions, dtype=torch.float64)[:, None]  # (T, 1)
    omega = torch.exp(-math.log(10000.0) * torch.arange(0, d_model, 2, dtype=torch.float64) / d_model)  # (d/2,)
    pe = torch.zeros(n_positions, d_model, dtype=torch.float64)
    pe[:, 0::2] = torch.sin(t * omega)  # (T, d/2)
    pe[:, 1::2] = torch.cos(t * omega)
    return pe.float()


class SinusoidalPositions(nn.Module):
    """x (B, T, d) → x + PE[:T]: computed for any T, so it never runs out of positions."""

    def __init__(self, d_model: int):
        super().__init__()
        self.d_model = d_model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + sinusoidal(x.size(1), self.d_model).to(x.device, x.dtype)  # (B, T, d)


class LearnedPositions(nn.Module):
    """x (B, T, d) → x + E[:T] with E a trained (max_len, d) table; longer inputs are an error."""

    def __init__(self, max_len: int, d_model: int):
        super().__init__()
        self.table = nn.Embedding(max_len, d_model)
        nn.init.normal_(self.table.weight, std=0.02)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        T = x.size(1)
        if T > self.table.num_embeddings:
            raise ValueError(f"sequence length {T} exceeds the learned table ({self.table.num_embeddings} positions)")
        return x + self.table(torch.arange(T, device=x.device))  # (B, T, d)


def alibi_slopes(n_head: int) -> torch.Tensor:
    """Press et al.'s head slopes: the geometric sequence 2^(−8/n), 2^(−16/n), …, 2^(−8) (n a power of two;
    otherwise the closest power of two's slopes plus every other slope of the next one, as their code)."""
    def power_of_two(n):
        start = 2.0 ** (-8.0 / n)
        return [start ** (i + 1) for i in range(n)]

    if n_head & (n_head - 1) == 0:
        return torch.tensor(power_of_two(n_head))
    closest = 2 ** int(math.floor(math.log2(n_head)))
    return torch.tensor(power_of_two(closest) + power_of_two(2 * closest)[0::2][:n_head - closest])


def alibi_bias(n_head: int, n_query: int, n_key: int | None = None, causal: bool = True) -> torch.Tensor:
    """The (n_head, Tq, Tk) additive score bias −m_h · distance(i, j); the last query is aligned to the last key.

    Causal models only look back, so distance = i − j ≥ 0 on the allowed keys (the mask removes the rest);
    bidirectional use takes |i − j|.
    """
    n_key = n_query if n_key is None else n_key
    i = torch.arange(n_key - n_query, n_key)[:, None]  # (Tq, 1) query positions, aligned at the end
    j = torch.arange(n_key)[None, :]  # (1, Tk)
    dist = (i - j).clamp(min=0) if causal else (i - j).abs()  # (Tq, Tk)
    return -alibi_slopes(n_head)[:, None, None] * dist  # (nh, Tq, Tk)
