"""OpenAI's tokenizers rebuilt from their published files, on top of our BPE: GPT-2 from encoder.json +
vocab.bpe, GPT-4 (cl100k_base) from its token -> rank file, with the merges recovered from the ranks.

Both give ids identical to tiktoken's. Their ids are OpenAI's, so the 256 single bytes are not ids 0..255
in byte order; `byte_ids` maps a raw byte to its id before the merges run.
"""
from __future__ import annotations

import base64
import json
from pathlib import Path

from .base import bpe
from .regex_bpe import GPT2_SPLIT_PATTERN, GPT4_SPLIT_PATTERN, RegexTokenizer

GPT2_SPECIAL = {"<|endoftext|>": 50256}
CL100K_SPECIAL = {"<|endoftext|>": 100257, "<|fim_prefix|>": 100258, "<|fim_middle|>": 100259,
                  "<|fim_suffix|>": 100260, "<|endofprompt|>": 100276}


def bytes_to_unicode() -> dict[int, str]:
    """GPT-2's printable stand-in for each byte (encoder.json stores tokens as such strings)."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, map(chr, cs)))


def _split_by_rank(ranks: dict[bytes, int], token: bytes, max_rank: int) -> list[bytes]:
    """Run rank-BPE on `token` using only tokens ranked below `max_rank`: what is left are its two parts."""
    parts = [bytes([b]) for b in token]
    pair_ranks = [ranks.get(a + b, max_rank) for a, b in zip(parts, parts[1:])]  # rank of each adjacent pair
    while pair_ranks:
        best = min(pair_ranks)
        if best >= max_rank:
            break
        i = pair_ranks.index(best)  # the earliest-learned merge, leftmost on ties
        parts[i:i + 2] = [parts[i] + parts[i + 1]]
        del pair_ranks[i]  # only the two pairs touching the new part change
        if i > 0:
            pair_ranks[i - 1] = ranks.get(parts[i - 1] + parts[i], max_rank)
        if i < len(parts) - 1:
            pair_ranks[i] = ranks.get(parts[i] + parts[i + 1], max_rank)
    return parts


def recover_merges(ranks: dict[bytes, int]) -> dict[tuple[int, int], int]:
    """cl100k ships only token -> rank; each multi-byte token is the merge of the two parts BPE leaves
    just before its own rank (minbpe's `recover_merges`)."""
    merges = {}
    for token, rank in sorted(ranks.items(), key=lambda kv: kv[1]):
        if len(token) == 1:
            continue
        pair = _split_by_rank(ranks, token, rank)
        if len(pair) != 2:
            raise ValueError(f"token {token!r} (rank {rank}) is not the merge of two earlier tokens")
        merges[(ranks[pair[0]], ranks[pair[1]])] = rank
    return merges


class PretrainedBPE(RegexTokenizer):
    """A RegexTokenizer whose vocabulary is given (id -> bytes) instead of learned."""

    def __init__(self, ranks: dict[bytes, int], merges: dict, pattern: str, special_tokens: dict[str, int]):
        super().__init__(pattern)
        self.ranks = ranks
        self.merges = merges
        self.byte_ids = [ranks[bytes([b])] for b in range(256)]  # raw byte -> its id
        self.vocab = self._build_vocab()
        self.register_special_tokens(special_tokens)

    def _build_vocab(self) -> dict[int, bytes]:
        vocab = {rank: token for token, rank in getattr(self, "ranks", {}).items()}
        for s, idx in self.special_tokens.items():
            vocab[idx] = s.encode("utf-8")
        return vocab

    def _encode_chunk(self, chunk: bytes) -> list[int]:
        ids = self._cache.get(chunk)
        if ids is None:
            ids = bpe([self.byte_ids[b] for b in chunk], self.merges)
            self._cache[chunk] = ids
        return ids

    def train(self, text, vocab_size, verbose=False):
        raise NotImplementedError("a pretrained tokenizer is loaded, not trained")

    def save(self, file_prefix):
        raise NotImplementedError("pretrained tokenizers are rebuilt from OpenAI's files, not saved")


def gpt2_tokenizer(encoder_json: Path | None = None, vocab_bpe: Path | None = None) -> PretrainedBPE:
    """GPT-2's tokenizer from OpenAI's encoder.json (token -> id) and vocab.bpe (the 50,000 merges in order)."""
    if encoder_json is None or vocab_bpe is None:
        from helpers.data import gpt2_bpe_files

        encoder_json, vocab_bpe = gpt2_bpe_files()
    encoder = json.loads(Path(encoder_json).read_text(encoding="utf-8"))  # "Ġthe" -> 262
    byte_decoder = {c: b for b, c in bytes_to_unicode().items()}
    ranks = {bytes(byte_decoder[c] for c in s): i for s, i in encoder.items() if s not in GPT2_SPECIAL}
    merges = {}
    lines = Path(vocab_bpe).read_text(encoding="utf-8").split("\n")
    for line in lines[1:]:  # first line is a version header
        if not line:
            continue
        a, b = line.split(" ")
        merges[(encoder[a], encoder[b])] = encoder[a + b]
    return PretrainedBPE(ranks, merges, GPT2_SPLIT_PATTERN, GPT2_SPECIAL)


def load_tiktoken_ranks(path: Path) -> dict[bytes, int]:
    """A .tiktoken file: one `base64(token) rank` per line."""
    ranks = {}
    for line in Path(path).read_bytes().splitlines():
        if line:
            token, rank = line.split()
            ranks[base64.b64decode(token)] = int(rank)
    return ranks


def gpt4_tokenizer(path: Path | None = None) -> PretrainedBPE:
    """GPT-4's cl100k_base tokenizer from its rank file, merges recovered from the ranks."""
    if path is None:
        from helpers.data import cl100k_file

        path = cl100k_file()
    ranks = load_tiktoken_ranks(path)
    return PretrainedBPE(ranks, recover_merges(ranks), GPT4_SPLIT_PATTERN, CL100K_SPECIAL)
