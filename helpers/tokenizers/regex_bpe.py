"""BPE with a regex pre-tokenizer (GPT-2/GPT-4 style): merges never cross chunk boundaries such as
letters|spaces|digits|punctuation, so "dog." and "dog!" share the token "dog".

Training counts each distinct chunk once with its frequency and updates pair counts incrementally, so it
learns exactly the merges of the naive loop (recount everything, merge the most frequent pair) but fast
enough for a megabyte of text.
"""
from __future__ import annotations

from collections import Counter, defaultdict

import regex as re

from .base import Tokenizer, merge, most_frequent

# tiktoken's split patterns (tiktoken_ext/openai_public.py), so chunks equal OpenAI's exactly.
GPT2_SPLIT_PATTERN = r"""'(?:[sdmt]|ll|ve|re)| ?\p{L}++| ?\p{N}++| ?[^\s\p{L}\p{N}]++|\s++$|\s+(?!\S)|\s"""
GPT4_SPLIT_PATTERN = (r"""'(?i:[sdmt]|ll|ve|re)|[^\r\n\p{L}\p{N}]?+\p{L}++|\p{N}{1,3}+| ?[^\s\p{L}\p{N}]++[\r\n]*+"""
                      r"""|\s++$|\s*[\r\n]|\s+(?!\S)|\s""")


class RegexTokenizer(Tokenizer):
    """Byte-level BPE over regex chunks; `pattern` defaults to GPT-4's (cl100k_base) split pattern."""

    def __init__(self, pattern: str | None = None):
        super().__init__()
        self.pattern = GPT4_SPLIT_PATTERN if pattern is None else pattern
        self._compile()

    def _compile(self) -> None:
        self._regex = re.compile(self.pattern)

    def _chunks(self, text: str) -> list[str]:
        return self._regex.findall(text)

    def train(self, text: str, vocab_size: int, verbose: bool = False) -> "RegexTokenizer":
        num_merges = self._check_vocab_size(vocab_size)
        counts = Counter(self._chunks(text))  # distinct chunk -> frequency
        words = [list(w.encode("utf-8")) for w in counts]  # each chunk as byte ids
        weights = list(counts.values())
        stats: dict = defaultdict(int)  # pair -> weighted count over all chunks
        where: dict = defaultdict(set)  # pair -> chunks that (may) contain it
        for wi, w in enumerate(words):
            for pair in zip(w, w[1:]):
                stats[pair] += weights[wi]
                where[pair].add(wi)
        self.merges = {}
        for i in range(num_merges):
            if not stats:
                break
            pair = most_frequent(stats)
            if stats[pair] < 2:
                break
            idx = 256 + i
            for wi in where.pop(pair):  # only the chunks that contain the pair change
                w, c = words[wi], weights[wi]
                new = merge(w, pair, idx)
                if len(new) == len(w):
                    continue  # stale entry: the pair was merged away earlier
                for p in zip(w, w[1:]):
                    stats[p] -= c
                for p in zip(new, new[1:]):
                    stats[p] += c
                    where[p].add(wi)
                for p in zip(w, w[1:]):
                    if stats.get(p) == 0:
                        del stats[p]  # pairs that no longer occur anywhere
                words[wi] = new
            self.merges[pair] = idx
            if verbose:
                print(f"merge {i + 1}/{num_merges}: {pair} -> {idx}")
        self.vocab = self._build_vocab()
        self._cache.clear()
        return self
