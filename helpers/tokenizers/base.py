"""Byte-level BPE, the shared part (after Karpathy's minbpe): merges, vocab, special tokens, decode, save/load.

A tokenizer is a list of merges `(a, b) -> new_id` learned in order; the vocabulary is the 256 single bytes
plus one byte string per merge. Encoding applies the merges greedily, the earliest-learned first.
"""
from __future__ import annotations

from pathlib import Path

Pair = tuple[int, int]


def get_stats(ids, counts: dict | None = None, weight: int = 1) -> dict:
    """Count adjacent pairs: [1, 2, 3, 1, 2] -> {(1, 2): 2, (2, 3): 1, (3, 1): 1} (times `weight`)."""
    counts = {} if counts is None else counts
    for pair in zip(ids, ids[1:]):
        counts[pair] = counts.get(pair, 0) + weight
    return counts


def merge(ids: list[int], pair: Pair, idx: int) -> list[int]:
    """Replace every non-overlapping occurrence of `pair` (left to right) with the new token `idx`."""
    out, i = [], 0
    while i < len(ids):
        if i < len(ids) - 1 and ids[i] == pair[0] and ids[i + 1] == pair[1]:
            out.append(idx)
            i += 2
        else:
            out.append(ids[i])
            i += 1
    return out


def most_frequent(stats: dict) -> Pair:
    """The pair to merge next: highest count, ties broken by the smaller pair (so training is deterministic)."""
    top = max(stats.values())
    return min(p for p, n in stats.items() if n == top)


def bpe(ids: list[int], merges: dict) -> list[int]:
    """Apply learned merges to one chunk: repeatedly merge the adjacent pair learned earliest (leftmost first).

    Same result as merging every occurrence of that pair at once (a pair that involves the new token was
    learned later, so it cannot jump the queue), but only the two neighbouring pairs are re-ranked.
    """
    ids = list(ids)
    inf = float("inf")
    ranks = [merges.get(pair, inf) for pair in zip(ids, ids[1:])]  # ranks[i]: pair (ids[i], ids[i+1])
    while ranks:
        best = min(ranks)
        if best == inf:
            break  # nothing left to merge
        i = ranks.index(best)
        ids[i:i + 2] = [merges[(ids[i], ids[i + 1])]]
        del ranks[i]
        if i > 0:
            ranks[i - 1] = merges.get((ids[i - 1], ids[i]), inf)
        if i < len(ids) - 1:
            ranks[i] = merges.get((ids[i], ids[i + 1]), inf)
    return ids


def render_token(t: bytes) -> str:
    """A token's bytes as printable text (control characters escaped) for the .vocab file."""
    import unicodedata

    s = t.decode("utf-8", errors="replace")
    return "".join(ch if unicodedata.category(ch)[0] != "C" else f"\\u{ord(ch):04x}" for ch in s)


class Tokenizer:
    """Base class: holds merges / special tokens / vocab; subclasses define how text is chunked and trained."""

    pattern: str = ""  # the pre-tokenizer regex ("" = the whole text is one chunk)

    def __init__(self):
        self.merges: dict[Pair, int] = {}  # (a, b) -> new id, in the order learned
        self.special_tokens: dict[str, int] = {}  # "<|endoftext|>" -> id
        self.vocab = self._build_vocab()  # id -> bytes
        self._cache: dict[bytes, list[int]] = {}  # chunk -> ids (most chunks repeat in real text)

    # ---- vocabulary ------------------------------------------------------------------------------------
    def _build_vocab(self) -> dict[int, bytes]:
        vocab = {i: bytes([i]) for i in range(256)}
        for (a, b), idx in self.merges.items():  # dicts keep insertion (= learning) order
            vocab[idx] = vocab[a] + vocab[b]
        for s, idx in self.special_tokens.items():
            vocab[idx] = s.encode("utf-8")
        return vocab

    @property
    def vocab_size(self) -> int:
        return len(self.vocab)

    def register_special_tokens(self, special_tokens: dict[str, int]) -> None:
        """Add tokens like {"<|endoftext|>": 100257}; they are never produced by merges."""
        for s, idx in special_tokens.items():
            if not s or not isinstance(idx, int) or idx < 0:
                raise ValueError(f"bad special token {s!r} -> {idx!r}")
            if idx in self.vocab and self.vocab[idx] != s.encode("utf-8"):
                raise ValueError(f"special token id {idx} for {s!r} is already used by a regular token")
        self.special_tokens.update(special_tokens)
        self.vocab = self._build_vocab()
        self._cache.clear()

    def truncated(self, vocab_size: int) -> "Tokenizer":
        """A copy keeping only the first `vocab_size - 256` merges (no special tokens).

        Merges are learned greedily in order, so this is exactly the tokenizer that training with the
        smaller `vocab_size` would have produced: one training run gives a whole vocabulary-size sweep.
        """
        import copy

        n = self._check_vocab_size(vocab_size)
        if n > len(self.merges):
            raise ValueError(f"vocab_size {vocab_size} needs {n} merges; this tokenizer has {len(self.merges)}")
        out = copy.copy(self)
        out.merges = dict(list(self.merges.items())[:n])
        out.special_tokens = {}
        out.vocab = out._build_vocab()
        out._cache = {}
        return out

    # ---- training (subclasses) -------------------------------------------------------------------------
    def train(self, text: str, vocab_size: int, verbose: bool = False) -> "Tokenizer":
        raise NotImplementedError

    @staticmethod
    def _check_vocab_size(vocab_size: int) -> int:
        if int(vocab_size) < 256:
            raise ValueError(f"vocab_size must be >= 256 (the byte alphabet), got {vocab_size!r}")
        return int(vocab_size) - 256

    # ---- encoding --------------------------------------------------------------------------------------
    def _chunks(self, text: str) -> list[str]:
        return [text]

    def _encode_chunk(self, chunk: bytes) -> list[int]:
        ids = self._cache.get(chunk)
        if ids is None:
            ids = bpe(list(chunk), self.merges)
            if len(self._cache) < 1_000_000:
                self._cache[chunk] = ids
        return ids

    def encode_ordinary(self, text: str) -> list[int]:
        """Encode ignoring special tokens (their text is encoded as ordinary bytes)."""
        if not isinstance(text, str):
            raise TypeError(f"encode expects str, got {type(text).__name__}; use encode_bytes for bytes")
        ids: list[int] = []
        for chunk in self._chunks(text):
            ids.extend(self._encode_chunk(chunk.encode("utf-8", errors="surrogateescape")))
        return ids

    def encode_bytes(self, data: bytes) -> list[int]:
        """Encode ANY byte string (not necessarily UTF-8): invalid bytes travel as surrogate escapes."""
        return self.encode_ordinary(bytes(data).decode("utf-8", errors="surrogateescape"))

    def encode(self, text: str, allowed_special="none_raise") -> list[int]:
        """Encode text; `allowed_special` is "all", "none", "none_raise" (error if one appears) or a set of names."""
        import regex as re

        if not isinstance(text, str):
            raise TypeError(f"encode expects str, got {type(text).__name__}; use encode_bytes for bytes")
        if allowed_special == "all":
            special = self.special_tokens
        elif allowed_special == "none":
            special = {}
        elif allowed_special == "none_raise":
            special = {}
            found = [s for s in self.special_tokens if s in text]
            if found:
                raise ValueError(f"text contains special token(s) {found}; pass allowed_special to encode them")
        elif isinstance(allowed_special, (set, frozenset, list, tuple)):
            unknown = set(allowed_special) - set(self.special_tokens)
            if unknown:
                raise ValueError(f"unknown special token(s) {sorted(unknown)}; known: {sorted(self.special_tokens)}")
            special = {s: self.special_tokens[s] for s in allowed_special}
        else:
            raise ValueError(f"allowed_special={allowed_special!r}: expected 'all', 'none', 'none_raise' or a set")
        if not special:
            return self.encode_ordinary(text)
        # split around the allowed special tokens (longest first, so one that contains another wins)
        alternatives = "|".join(re.escape(s) for s in sorted(special, key=len, reverse=True))
        ids: list[int] = []
        for part in re.split(f"({alternatives})", text):
            ids.extend([special[part]] if part in special else self.encode_ordinary(part))
        return ids

    # ---- decoding --------------------------------------------------------------------------------------
    def decode_bytes(self, ids) -> bytes:
        """ids -> the exact bytes they stand for; unknown ids are an error."""
        try:
            return b"".join(self.vocab[int(i)] for i in ids)
        except KeyError as exc:
            raise ValueError(f"invalid token id {exc.args[0]!r} (vocab has {self.vocab_size} ids)") from None

    def decode(self, ids) -> str:
        """ids -> text; a byte sequence that is not valid UTF-8 (e.g. half a character) becomes U+FFFD."""
        return self.decode_bytes(ids).decode("utf-8", errors="replace")

    # ---- save / load (minbpe's .model format) ----------------------------------------------------------
    def save(self, file_prefix) -> Path:
        """Write `<prefix>.model` (loadable) and `<prefix>.vocab` (for humans); returns the .model path."""
        prefix = Path(file_prefix)
        model_file = prefix.with_name(prefix.name + ".model")
        lines = ["minbpe v1", self.pattern, str(len(self.special_tokens))]
        lines += [f"{s} {idx}" for s, idx in self.special_tokens.items()]
        lines += [f"{a} {b}" for (a, b) in self.merges]  # ids are implicit: 256, 257, ... in order
        model_file.write_text("\n".join(lines) + "\n", encoding="utf-8")
        inverted = {idx: pair for pair, idx in self.merges.items()}
        with open(prefix.with_name(prefix.name + ".vocab"), "w", encoding="utf-8") as f:
            for idx, token in self.vocab.items():
                if idx in inverted:
                    a, b = inverted[idx]
                    f.write(f"[{render_token(self.vocab[a])}][{render_token(self.vocab[b])}] -> "
                            f"[{render_token(token)}] {idx}\n")
                else:
                    f.write(f"[{render_token(token)}] {idx}\n")
        return model_file

    def load(self, model_file) -> "Tokenizer":
        """Read a .model file written by `save` (merges, special tokens, pattern)."""
        path = Path(model_file)
        if path.suffix != ".model":
            raise ValueError(f"expected a .model file, got {path}")
        lines = path.read_text(encoding="utf-8").split("\n")
        if lines[0] != "minbpe v1":
            raise ValueError(f"{path}: not a minbpe v1 model (first line {lines[0]!r})")
        self.pattern = lines[1]
        n_special = int(lines[2])
        self.special_tokens = {}
        for line in lines[3:3 + n_special]:
            s, idx = line.rsplit(" ", 1)
            self.special_tokens[s] = int(idx)
        self.merges = {}
        for i, line in enumerate(l for l in lines[3 + n_special:] if l):
            a, b = map(int, line.split())
            self.merges[(a, b)] = 256 + i
        self.vocab = self._build_vocab()
        self._cache.clear()
        self._compile()
        return self

    def _compile(self) -> None:
        """Hook for subclasses that precompile their pattern."""
