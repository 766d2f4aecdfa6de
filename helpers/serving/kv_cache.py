"""The contiguous ("traditional") KV cache, the greedy reference generator, and what contiguous reservation wastes.

Without a cache, generating token t re-runs the model over all t previous tokens. With one, each layer keeps the keys
and values of every past token, and a decode step runs the model on ONE new token: its query attends over the cached
K/V. Before PagedAttention, serving systems (FasterTransformer, Orca) stored each request's K/V in one contiguous
region reserved up front for the longest it could get (max_len), because the final length is unknown. Most of that
reservation is never used: `contiguous_waste` vs `paged_waste` measure it on request lengths drawn like the vLLM
paper's datasets (`sample_request_lengths`).

`generate` is THE reference: greedy decoding of one sequence with this cache. Every engine output (paged, batched,
preempted, served over HTTP) must equal it token for token.
"""
from __future__ import annotations

import math

import numpy as np
import torch

from ..models.llama import causal_attention


class ContiguousKVCache:
    """K/V of up to max_seqs sequences, each in its own pre-allocated (max_len, Hkv, D) region per layer."""

    def __init__(self, n_layers: int, max_seqs: int, max_len: int, n_kv_heads: int, head_dim: int,
                 dtype: torch.dtype = torch.float32):
        for name, val in (("n_layers", n_layers), ("max_seqs", max_seqs), ("max_len", max_len),
                          ("n_kv_heads", n_kv_heads), ("head_dim", head_dim)):
            if int(val) < 1:
                raise ValueError(f"ContiguousKVCache {name} must be >= 1, got {val!r}")
        self.n_layers, self.max_seqs, self.max_len = n_layers, max_seqs, max_len
        shape = (n_layers, max_seqs, max_len, n_kv_heads, head_dim)
        self.k = torch.zeros(shape, dtype=dtype)
        self.v = torch.zeros(shape, dtype=dtype)
        self.lengths = [0] * max_seqs  # tokens stored per sequence

    @property
    def nbytes(self) -> int:
        return self.k.nbytes + self.v.nbytes

    def attend(self, seq: int, positions: torch.Tensor):
        """The attention backend for new tokens of sequence `seq` at `positions` (N,), which must continue it."""
        if not 0 <= seq < self.max_seqs:
            raise IndexError(f"sequence {seq} out of range [0, {self.max_seqs})")
        start, n = self.lengths[seq], len(positions)
        if not torch.equal(positions, torch.arange(start, start + n)):
            raise ValueError(f"sequence {seq} holds {start} tokens: new positions must be {start}..{start + n - 1}")
        if start + n > self.max_len:
            raise ValueError(f"sequence {seq} would reach {start + n} tokens, its region holds max_len={self.max_len}")

        def attend(layer: int, q, k, v):
            self.k[layer, seq, start:start + n] = k  # (N, Hkv, D) into the sequence's own region
            self.v[layer, seq, start:start + n] = v
            if layer == self.n_layers - 1:
                self.lengths[seq] = start + n
            return causal_attention(q, self.k[layer, seq, :start + n], self.v[layer, seq, :start + n], positions)

        return attend

    def free(self, seq: int) -> None:
        self.lengths[seq] = 0


@torch.no_grad()
def generate(model, prompt_ids: list[int], max_new_tokens: int, eos_id: int | None = None) -> list[int]:
    """Greedy continuation of one prompt with a contiguous cache: the new token ids (the prompt not included).

    Stops after max_new_tokens or right after emitting eos_id (which is included), like transformers' generate.
    """
    cfg = model.cfg
    if not prompt_ids:
        raise ValueError("the prompt must have at least one token")
    if max_new_tokens < 1:
        raise ValueError(f"max_new_tokens must be >= 1, got {max_new_tokens}")
    if len(prompt_ids) + max_new_tokens > cfg.max_seq_len:
        raise ValueError(f"prompt ({len(prompt_ids)}) + max_new_tokens ({max_new_tokens}) exceeds the model's "
                         f"max_seq_len {cfg.max_seq_len}")
    cache = ContiguousKVCache(cfg.n_layers, 1, len(prompt_ids) + max_new_tokens, cfg.n_kv_heads, cfg.head_dim,
                              dtype=next(model.parameters()).dtype)
    tokens = torch.tensor(prompt_ids, dtype=torch.long)  # prefill: the whole prompt in one forward
    out = []
    while True:
        positions = torch.arange(cache.lengths[0], cache.lengths[0] + len(tokens))
        last = torch.tensor([len(tokens) - 1])  # only the newest token's logits are needed
        logits = model(tokens, positions, cache.attend(0, positions), rows=last)  # (1, V)
        nxt = int(logits[0].argmax())
        out.append(nxt)
        if len(out) == max_new_tokens or nxt == eos_id:
            return out
        tokens = torch.tensor([nxt])  # decode: one new token, its past read from the cache


# ---- How much memory a contiguous reservation wastes --------------------------------------------------------------

# Mean input / output lengths in tokens of the two datasets of the vLLM paper: Kwon et al., "Efficient Memory
# Management for Large Language Model Serving with PagedAttention", SOSP 2023, Fig. 11 legend (ShareGPT: input 161.31,
# output 337.99; Alpaca: 19.31, 58.45); §6.1: "the ShareGPT dataset has 8.4x longer input prompts and 5.8x longer
# outputs on average than the Alpaca dataset, with higher variance". The paper's histograms are right-skewed, peaked
# near zero with a long tail to ~2000 tokens; we ASSUME an exponential shape with these means (the maximum-entropy
# distribution of a positive length with a given mean), clipped so prompt + output fits the paper's OPT context of
# 2048 tokens. Only the means are published numbers; the shape is our assumption.
LENGTH_STATS = {"sharegpt": (161.31, 337.99), "alpaca": (19.31, 58.45)}
PAPER_MAX_LEN = 2048  # OPT's context length, the reservation of the paper's Orca (Max) baseline


def sample_request_lengths(dataset: str, n: int, seed: int = 0, max_len: int = PAPER_MAX_LEN) -> list[tuple[int, int]]:
    """n (prompt_len, output_len) pairs, each exponential with the dataset's mean, >= 1, prompt + output <= max_len."""
    if dataset not in LENGTH_STATS:
        raise ValueError(f"unknown dataset {dataset!r}; known: {', '.join(LENGTH_STATS)}")
    rng = np.random.default_rng(seed)
    mean_in, mean_out = LENGTH_STATS[dataset]
    prompt = np.minimum(np.ceil(rng.exponential(mean_in, n)), max_len - 1).astype(int)  # ceil: at least 1 token
    output = np.minimum(np.ceil(rng.exponential(mean_out, n)), max_len - prompt).astype(int)
    return [(int(p), int(o)) for p, o in zip(prompt, output)]


def contiguous_waste(lengths: list[int], max_len: int) -> dict:
    """Each request reserves max_len slots up front; it uses its final length. All waste: reserved - used."""
    if any(n < 0 or n > max_len for n in lengths):
        raise ValueError(f"every length must lie in [0, max_len={max_len}]")
    reserved, used = len(lengths) * max_len, int(sum(lengths))
    return {"reserved": reserved, "used": used, "wasted_fraction": 1 - used / reserved if reserved else 0.0}


def paged_waste(lengths: list[int], block_size: int) -> dict:
    """Each request holds ceil(length / block_size) blocks: only its last block's unfilled tail is wasted."""
    if block_size < 1 or any(n < 0 for n in lengths):
        raise ValueError("block_size must be >= 1 and lengths >= 0")
    reserved, used = sum(math.ceil(n / block_size) * block_size for n in lengths), int(sum(lengths))
    return {"reserved": reserved, "used": used, "wasted_fraction": 1 - used / reserved if reserved else 0.0}
