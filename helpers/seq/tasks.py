"""Synthetic sequence tasks with a known answer, for experiments that must isolate one property.

reverse: output the source backwards. The decoder's t-th token is the source's (L−1−t)-th: the first
    output depends on the last input and the last output on the first, so without attention everything
    must pass through the encoder's final state.
adding problem (Hochreiter & Schmidhuber 1997): a (T, 2) sequence of (value ~ U(0, 1), marker); exactly two
    markers are 1, one in each half; the target is the sum of the two marked values. A model must carry
    the first marked value across ≥ T/2 steps.
"""
from __future__ import annotations

import torch

PAD, BOS, FIRST_SYMBOL = 0, 1, 2  # reversal vocabulary: padding, begin-of-sequence, then the symbols


def reverse_batch(batch: int, min_len: int, max_len: int, n_symbols: int, generator=None):
    """src (B, L), tgt (B, L) (padded with PAD), lengths (B,): tgt[b, :n] = src[b, :n] reversed."""
    if not 1 <= min_len <= max_len:
        raise ValueError(f"need 1 <= min_len <= max_len, got {min_len}, {max_len}")
    lengths = torch.randint(min_len, max_len + 1, (batch,), generator=generator)  # (B,)
    src = torch.randint(FIRST_SYMBOL, FIRST_SYMBOL + n_symbols, (batch, max_len), generator=generator)
    pos = torch.arange(max_len)[None]  # (1, L)
    valid = pos < lengths[:, None]
    src = src.masked_fill(~valid, PAD)
    idx = torch.where(valid, lengths[:, None] - 1 - pos, pos)  # reversed index within each length
    tgt = src.gather(1, idx).masked_fill(~valid, PAD)
    return src, tgt, lengths


def adding_problem(batch: int, steps: int, generator=None):
    """x (B, T, 2) = (values, markers), y (B,) = sum of the two marked values; one marker in each half."""
    if steps < 2:
        raise ValueError(f"the adding problem needs at least 2 steps, got {steps}")
    values = torch.rand(batch, steps, generator=generator)  # (B, T)
    half = steps // 2
    first = torch.randint(0, half, (batch,), generator=generator)
    second = torch.randint(half, steps, (batch,), generator=generator)
    markers = torch.zeros(batch, steps)
    markers[torch.arange(batch), first] = 1.0
    markers[torch.arange(batch), second] = 1.0
    return torch.stack([values, markers], -1), (values * markers).sum(1)
