"""The hierarchical WaveNet of Lecture 6, run as a stack of dilated causal convolutions.

Level k of `models.wavenet` fuses two vectors 2**k apart with one Linear: that is a kernel-2
convolution with dilation 2**k. Run over a whole name at once (instead of one 8-char window per
prediction), it reuses the shared sub-trees between neighbouring positions — WaveNet's trick — and
makes causality structural: position t only ever reads inputs at t, t-d, t-2d, ... (left padding).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from .layers import BatchNorm1d, Embedding, FlattenConsecutive, Linear, Sequential, Tanh


def conv_levels(model: Sequential) -> list[tuple[Linear, BatchNorm1d]]:
    """The (Linear, BatchNorm1d) pair of each tree level of a `models.wavenet` Sequential."""
    L = model.layers
    if not isinstance(L[0], Embedding) or not isinstance(L[-1], Linear):
        raise ValueError("expected a models.wavenet Sequential (Embedding ... Linear)")
    levels = [(L[i + 1], L[i + 2]) for i in range(1, len(L) - 1, 4)]
    for i in range(1, len(L) - 1, 4):
        kinds = tuple(type(x) for x in L[i:i + 4])
        if kinds != (FlattenConsecutive, Linear, BatchNorm1d, Tanh) or L[i].n != 2:
            raise ValueError(f"layers {i}..{i + 3} are {kinds}, not a WaveNet level")
    return levels


@torch.no_grad()
def causal_conv_logits(model: Sequential, idx: torch.Tensor, causal: bool = True) -> torch.Tensor:
    """idx (B, T) tokens -> logits (B, T, V): logits[:, t] predicts token t+1 from tokens <= t.

    Uses the model's weights and BatchNorm running statistics (evaluation mode). The input is
    left-padded with block_size-1 '.' tokens, exactly the context the window model sees at the start.
    `causal=False` pads symmetrically instead: the negative control for the causality check.
    """
    if idx.ndim != 2:
        raise ValueError(f"idx must be (B, T) tokens, got shape {tuple(idx.shape)}")
    levels = conv_levels(model)
    receptive = 2 ** len(levels)  # block_size
    B, T = idx.shape
    pad = receptive - 1
    left = pad if causal else pad // 2
    x = F.pad(idx, (left, pad - left), value=0)  # (B, T + pad)
    x = model.layers[0].weight[x].transpose(1, 2)  # (B, E, T + pad): channels first for conv1d
    for k, (lin, bn) in enumerate(levels):
        fan_in, n_out = lin.weight.shape
        C = fan_in // 2
        # x @ W on [v(t - d), v(t)] == conv1d with w[o, c, j] = W[j*C + c, o], kernel 2, dilation d
        w = lin.weight.T.reshape(n_out, 2, C).transpose(1, 2)  # (out, C, 2)
        x = F.conv1d(x, w, dilation=2 ** k)  # (B, out, T_k): each level shortens the sequence by d
        x = (x - bn.running_mean[:, None]) / torch.sqrt(bn.running_var[:, None] + bn.eps)
        x = torch.tanh(bn.gamma[:, None] * x + bn.beta[:, None])
    out = model.layers[-1]
    return x.transpose(1, 2) @ out.weight + out.bias  # (B, T, V)


def causality_violations(logits_fn, idx: torch.Tensor, generator: torch.Generator | None = None,
                         vocab_size: int = 27) -> int:
    """How many positions t change their output when only the tokens after t are changed (0 = causal)."""
    B, T = idx.shape
    base = logits_fn(idx)
    bad = 0
    for t in range(T - 1):
        changed = idx.clone()
        changed[:, t + 1:] = torch.randint(0, vocab_size, (B, T - t - 1), generator=generator)
        bad += int(not torch.equal(logits_fn(changed)[:, :t + 1], base[:, :t + 1]))
    return bad
