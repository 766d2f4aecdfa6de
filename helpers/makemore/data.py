"""Names -> tensors: the vocabulary, Karpathy's train/val/test split and (context, next char) pairs."""
from __future__ import annotations

import random

import torch

BOUNDARY = "."  # one token marks both the start and the end of a name


def build_vocab(words: list[str]) -> tuple[dict[str, int], dict[int, str]]:
    """stoi / itos over the characters of `words`, with '.' = 0 (27 symbols for names)."""
    chars = sorted(set("".join(words)))
    if BOUNDARY in chars:
        raise ValueError(f"words may not contain the boundary token {BOUNDARY!r}")
    stoi = {BOUNDARY: 0, **{c: i + 1 for i, c in enumerate(chars)}}
    return stoi, {i: c for c, i in stoi.items()}


def split_words(words: list[str], seed: int = 42) -> tuple[list[str], list[str], list[str]]:
    """Karpathy's split: `random.seed(42); random.shuffle(words)`, then 80% / 10% / 10%.

    A private `random.Random(seed)` gives the same permutation without touching the global RNG.
    """
    words = list(words)
    random.Random(seed).shuffle(words)
    n1, n2 = int(0.8 * len(words)), int(0.9 * len(words))
    return words[:n1], words[n1:n2], words[n2:]


def build_dataset(words: list[str], block_size: int, stoi: dict[str, int]) -> tuple[torch.Tensor, torch.Tensor]:
    """X (N, block_size) int64 contexts, Y (N,) next characters; one example per character + the end.

    `emma` with block_size 3 -> `...`→e, `..e`→m, `.em`→m, `emm`→a, `mma`→. (contexts padded with '.').
    """
    if block_size < 1:
        raise ValueError(f"block_size must be >= 1, got {block_size}")
    X, Y = [], []
    for w in words:
        context = [0] * block_size
        for ch in w + BOUNDARY:
            if ch not in stoi:
                raise ValueError(f"character {ch!r} of {w!r} is not in the vocabulary")
            ix = stoi[ch]
            X.append(context)
            Y.append(ix)
            context = context[1:] + [ix]
    return torch.tensor(X, dtype=torch.long), torch.tensor(Y, dtype=torch.long)
