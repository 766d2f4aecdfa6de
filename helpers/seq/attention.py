"""Attention for encoder–decoders (Bahdanau et al. 2015; Luong et al. 2015).

A decoder query q scores every encoder state k_s, the scores become weights by a softmax over the valid
(unmasked) positions, and the context vector is the weighted average of the values:
    additive (Bahdanau):        e_s = vᵀ tanh(W_q q + W_k k_s)
    multiplicative (Luong):     e_s = qᵀ W k_s   ("general"),   e_s = qᵀ k_s  ("dot")
    α = softmax(e over unmasked s),   context = Σ_s α_s k_s
Queries may be one per sequence (B, Hq) or one per step (B, Tq, Hq); masks are (B, S) or (B, Tq, S), True = keep.
"""
from __future__ import annotations

import torch
from torch import nn


def masked_softmax(scores: torch.Tensor, mask: torch.Tensor | None = None, dim: int = -1) -> torch.Tensor:
    """Softmax over `dim` where mask is True; masked positions get weight exactly 0.

    A row whose every position is masked has no distribution: that is a bug upstream (an empty sequence),
    so it raises instead of returning the NaNs a -inf fill would give.
    """
    if mask is None:
        return torch.softmax(scores, dim)
    if mask.shape != scores.shape:
        try:
            mask = mask.expand_as(scores)
        except RuntimeError:
            raise ValueError(f"mask {tuple(mask.shape)} does not match scores {tuple(scores.shape)}") from None
    mask = mask.bool()
    if not bool(mask.any(dim).all()):
        raise ValueError("attention: a query has every key masked (an empty sequence?); no distribution to take")
    return torch.softmax(scores.masked_fill(~mask, float("-inf")), dim)


def _as_steps(query, mask):
    """(B, Hq) → (B, 1, Hq) so that one code path serves both; mask (B, S) → (B, 1, S)."""
    single = query.dim() == 2
    if single:
        query = query[:, None]
    if mask is not None and mask.dim() == 2:
        mask = mask[:, None]
    return query, mask, single


def _check(query, keys):
    if keys.dim() != 3 or query.shape[0] != keys.shape[0]:
        raise ValueError(f"keys must be (B, S, H) with the query's batch size: query {tuple(query.shape)}, "
                         f"keys {tuple(keys.shape)}")


def additive_scores(query, keys, W_q, W_k, v):
    """Bahdanau scores: query (B, Tq, Hq), keys (B, S, Hk), W_q (A, Hq), W_k (A, Hk), v (A,) → (B, Tq, S)."""
    q = query @ W_q.T  # (B, Tq, A)
    k = keys @ W_k.T  # (B, S, A)
    return torch.tanh(q[:, :, None, :] + k[:, None, :, :]) @ v  # (B, Tq, S)


class AdditiveAttention(nn.Module):
    """Bahdanau attention: (query, keys, mask) → (context, weights)."""

    def __init__(self, query_size: int, key_size: int, attn_size: int):
        super().__init__()
        self.W_q = nn.Linear(query_size, attn_size, bias=False)
        self.W_k = nn.Linear(key_size, attn_size, bias=False)
        self.v = nn.Parameter(torch.randn(attn_size) / attn_size ** 0.5)

    def forward(self, query, keys, mask=None):
        _check(query, keys)
        query, mask, single = _as_steps(query, mask)
        scores = additive_scores(query, keys, self.W_q.weight, self.W_k.weight, self.v)  # (B, Tq, S)
        weights = masked_softmax(scores, mask)
        context = weights @ keys  # (B, Tq, Hk)
        return (context[:, 0], weights[:, 0]) if single else (context, weights)


class MultiplicativeAttention(nn.Module):
    """Luong attention, "general" (qᵀ W k) or "dot" (qᵀ k): (query, keys, mask) → (context, weights)."""

    def __init__(self, query_size: int, key_size: int, kind: str = "general"):
        super().__init__()
        if kind not in ("general", "dot"):
            raise ValueError(f"kind must be 'general' or 'dot', got {kind!r}")
        if kind == "dot" and query_size != key_size:
            raise ValueError("dot attention needs query_size == key_size")
        self.kind = kind
        self.W = nn.Linear(key_size, query_size, bias=False) if kind == "general" else None

    def forward(self, query, keys, mask=None):
        _check(query, keys)
        query, mask, single = _as_steps(query, mask)
        k = self.W(keys) if self.W is not None else keys  # (B, S, Hq)
        scores = query @ k.transpose(1, 2)  # (B, Tq, S)
        weights = masked_softmax(scores, mask)
        context = weights @ keys  # (B, Tq, Hk)
        return (context[:, 0], weights[:, 0]) if single else (context, weights)
