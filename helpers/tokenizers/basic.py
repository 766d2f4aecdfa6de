"""Lecture 8's first tokenizer: byte-level BPE trained on the raw bytes of a text, no pre-splitting."""
from __future__ import annotations

from .base import Tokenizer, get_stats, merge, most_frequent


class BasicTokenizer(Tokenizer):
    """Train: repeatedly replace the most frequent adjacent pair with a new token (Gage 1994, Sennrich 2016)."""

    def train(self, text: str, vocab_size: int, verbose: bool = False) -> "BasicTokenizer":
        num_merges = self._check_vocab_size(vocab_size)
        ids = list(text.encode("utf-8"))  # (N,) byte values 0..255
        self.merges = {}
        for i in range(num_merges):
            stats = get_stats(ids)
            if not stats or max(stats.values()) < 2:
                break  # nothing repeats: more merges would not compress
            pair = most_frequent(stats)
            idx = 256 + i
            ids = merge(ids, pair, idx)
            self.merges[pair] = idx
            if verbose:
                print(f"merge {i + 1}/{num_merges}: {pair} -> {idx} ({stats[pair]} occurrences)")
        self.vocab = self._build_vocab()
        self._cache.clear()
        return self
