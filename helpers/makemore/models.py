"""The makemore models of Lectures 3, 4 and 6, built from `layers`.

Initialisation follows Lecture 4's fixes: Kaiming gain 5/3 for layers feeding a tanh, and the output
layer scaled by 0.1 so the initial predictions are near uniform (loss near ln 27 = 3.30, not ~27).
"""
from __future__ import annotations

import math

import torch

from .layers import BatchNorm1d, Embedding, FlattenConsecutive, Linear, Sequential, Tanh

TANH_GAIN = 5 / 3  # Kaiming gain for tanh: keeps activation std ~1 through the layers


def _init(model: Sequential, last_scale: float) -> Sequential:
    last = model.layers[-1]
    if isinstance(last, BatchNorm1d):
        last.gamma *= last_scale
    else:
        last.weight *= last_scale
    for p in model.parameters():
        p.requires_grad = True
    return model


def mlp(vocab_size: int, block_size: int, n_embd: int, n_hidden: int, batchnorm: bool = False,
        last_scale: float = 0.1, generator: torch.Generator | None = None) -> Sequential:
    """Bengio et al. 2003 as in Lecture 3: embed block_size chars, concatenate, one tanh layer, logits."""
    g = generator
    gain = 1.0 if batchnorm else TANH_GAIN  # BatchNorm undoes the scale anyway (Karpathy's Lecture 6 code)
    hidden = [Linear(n_embd * block_size, n_hidden, bias=not batchnorm, gain=gain, generator=g)]
    hidden += [BatchNorm1d(n_hidden)] if batchnorm else []
    model = Sequential([Embedding(vocab_size, n_embd, g), FlattenConsecutive(block_size), *hidden, Tanh(),
                        Linear(n_hidden, vocab_size, generator=g)])
    return _init(model, last_scale)


def deep_mlp(vocab_size: int, block_size: int, n_embd: int, n_hidden: int, n_layers: int = 5,
             batchnorm: bool = True, gain: float = TANH_GAIN, last_scale: float = 0.1,
             generator: torch.Generator | None = None) -> Sequential:
    """Lecture 4's diagnostic network: n_layers x (Linear [-> BatchNorm] -> Tanh), then Linear [-> BatchNorm].

    `gain` scales every Linear's Kaiming init, so gain=5/3 is the principled choice and a far-off
    value (0.5, 3) is the badly-scaled network whose activations vanish or saturate.
    """
    g = generator
    layers: list = [Embedding(vocab_size, n_embd, g), FlattenConsecutive(block_size)]
    fan_in = n_embd * block_size
    for _ in range(n_layers):
        layers += [Linear(fan_in, n_hidden, bias=not batchnorm, gain=gain, generator=g)]
        layers += [BatchNorm1d(n_hidden)] if batchnorm else []
        layers += [Tanh()]
        fan_in = n_hidden
    layers += [Linear(fan_in, vocab_size, bias=not batchnorm, generator=g)]
    layers += [BatchNorm1d(vocab_size)] if batchnorm else []
    return _init(Sequential(layers), last_scale)


def wavenet(vocab_size: int, block_size: int = 8, n_embd: int = 24, n_hidden: int = 128,
            generator: torch.Generator | None = None) -> Sequential:
    """Lecture 6: fuse neighbouring characters pairwise, log2(block_size) times (a binary tree).

    8 chars -> 4 pairs -> 2 quads -> 1: each level is Linear -> BatchNorm -> Tanh over 2 vectors, i.e.
    a kernel-2 convolution with dilation 1, 2, 4 (see `conv.py`). 76,579 parameters at 24 / 128.
    """
    levels = math.log2(block_size)
    if block_size < 2 or levels != int(levels):
        raise ValueError(f"wavenet needs block_size a power of 2 (>= 2), got {block_size}")
    g = generator
    layers: list = [Embedding(vocab_size, n_embd, g)]
    fan_in = n_embd
    for _ in range(int(levels)):
        layers += [FlattenConsecutive(2), Linear(fan_in * 2, n_hidden, bias=False, generator=g),  # gain 1: BN follows
                   BatchNorm1d(n_hidden), Tanh()]
        fan_in = n_hidden
    layers += [Linear(n_hidden, vocab_size, generator=g)]
    return _init(Sequential(layers), 0.1)
