"""The simplest tokenizer: one id per distinct character of a training text (Lecture 7's)."""
from __future__ import annotations


class CharTokenizer:
    """ids 0..V-1 for the sorted distinct characters of `text`; unknown characters are an error."""

    def __init__(self, text: str):
        if not text:
            raise ValueError("CharTokenizer needs a non-empty text")
        self.chars = sorted(set(text))
        self.stoi = {ch: i for i, ch in enumerate(self.chars)}

    @property
    def vocab_size(self) -> int:
        return len(self.chars)

    def encode(self, text: str) -> list[int]:
        try:
            return [self.stoi[ch] for ch in text]
        except KeyError as exc:
            raise ValueError(f"character {exc.args[0]!r} is not in the vocabulary") from None

    def decode(self, ids) -> str:
        ids = [int(i) for i in ids]
        bad = [i for i in ids if not 0 <= i < len(self.chars)]
        if bad:
            raise ValueError(f"token ids out of range [0, {len(self.chars)}): {bad[:5]}")
        return "".join(self.chars[i] for i in ids)
