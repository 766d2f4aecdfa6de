"""PagedAttention (Kwon et al., SOSP 2023): the KV cache in fixed-size blocks, read through a block table.

An operating system gives each process contiguous *virtual* pages that map to scattered *physical* frames through a
page table, so memory is allocated a page at a time and never needs one large contiguous hole. vLLM does the same with
the KV cache: a sequence's token t lives in logical block t // block_size at offset t % block_size, and the sequence's
block table maps the logical block to a physical block anywhere in one big pool:

    slot(t) = block_table[t // block_size] * block_size + t % block_size

Blocks are allocated as the sequence grows (helpers/serving/block_allocator.py decides which), so the only waste is the
unfilled tail of each sequence's last block, and two sequences can share a block (copy-on-write on the first write).

Here the pool is two tensors (layers, blocks, block_size, kv_heads, head_dim). `gather` reads one sequence's K/V back
in token order and attention is the same `causal_attention` as the contiguous cache, so paged == contiguous exactly. On
a GPU vLLM's kernel reads the blocks in place (no gathered copy) and accumulates the softmax block by block; the
addressing is the same. `PagedAttention` attends one sequence at a time (the readable reference); `FlatPagedAttention`,
which the engine uses, does a whole step's sequences in one padded, masked batch — same math, far fewer small ops.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from ..models.llama import causal_attention


def slots_for(block_table: list[int], positions: torch.Tensor, block_size: int) -> torch.Tensor:
    """The flat cache slots (N,) of a sequence's token positions (N,): the page-table lookup."""
    table = torch.as_tensor(block_table, dtype=torch.long)
    if len(positions) and int(positions.max()) >= len(table) * block_size:
        raise ValueError(f"position {int(positions.max())} needs block {int(positions.max()) // block_size}, but the "
                         f"block table has only {len(table)} blocks of {block_size} tokens")
    return table[positions // block_size] * block_size + positions % block_size  # (N,)


class PagedKVCache:
    """The physical KV pool: .k, .v (n_layers, num_blocks, block_size, n_kv_heads, head_dim)."""

    def __init__(self, n_layers: int, num_blocks: int, block_size: int, n_kv_heads: int, head_dim: int,
                 dtype: torch.dtype = torch.float32):
        for name, val in (("n_layers", n_layers), ("num_blocks", num_blocks), ("block_size", block_size),
                          ("n_kv_heads", n_kv_heads), ("head_dim", head_dim)):
            if int(val) < 1:
                raise ValueError(f"PagedKVCache {name} must be >= 1, got {val!r}")
        self.n_layers, self.num_blocks, self.block_size = n_layers, num_blocks, block_size
        self.n_kv_heads, self.head_dim = n_kv_heads, head_dim
        shape = (n_layers, num_blocks, block_size, n_kv_heads, head_dim)
        self.k = torch.zeros(shape, dtype=dtype)
        self.v = torch.zeros(shape, dtype=dtype)

    @property
    def num_slots(self) -> int:
        return self.num_blocks * self.block_size

    @property
    def nbytes(self) -> int:
        return self.k.nbytes + self.v.nbytes

    @property
    def bytes_per_token(self) -> int:
        """2 (K and V) · layers · kv_heads · head_dim · bytes per element."""
        return 2 * self.n_layers * self.n_kv_heads * self.head_dim * self.k.element_size()

    def _check_layer(self, layer: int) -> None:
        if not 0 <= layer < self.n_layers:
            raise IndexError(f"layer {layer} out of range [0, {self.n_layers})")

    def _check_blocks(self, blocks) -> None:
        bad = [b for b in blocks if not 0 <= int(b) < self.num_blocks]
        if bad:
            raise IndexError(f"block ids {bad[:5]} out of range [0, {self.num_blocks})")

    def write(self, layer: int, slots: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> None:
        """Store the K/V (N, Hkv, D) of N new tokens at their slots (N,) (slot = block * block_size + offset)."""
        self._check_layer(layer)
        want = (len(slots), self.n_kv_heads, self.head_dim)
        if tuple(k.shape) != want or tuple(v.shape) != want:
            raise ValueError(f"k and v must be {want} for {len(slots)} slots, got {tuple(k.shape)}, {tuple(v.shape)}")
        if len(slots) and (int(slots.min()) < 0 or int(slots.max()) >= self.num_slots):
            raise IndexError(f"slot out of range [0, {self.num_slots}): got {int(slots.min())}..{int(slots.max())}")
        if len(torch.unique(slots)) != len(slots):
            raise ValueError("two tokens were given the same slot")
        self.k[layer].view(self.num_slots, self.n_kv_heads, self.head_dim)[slots] = k
        self.v[layer].view(self.num_slots, self.n_kv_heads, self.head_dim)[slots] = v

    def copy_blocks(self, pairs: list[tuple[int, int]]) -> None:
        """Copy block src to block dst in every layer, for each (src, dst): the copy of copy-on-write."""
        if not pairs:
            return
        src, dst = zip(*pairs)
        self._check_blocks(src + dst)
        src, dst = torch.tensor(src), torch.tensor(dst)
        self.k[:, dst] = self.k[:, src]
        self.v[:, dst] = self.v[:, src]

    def gather(self, layer: int, block_table: list[int], length: int) -> tuple[torch.Tensor, torch.Tensor]:
        """One sequence's K and V (length, Hkv, D) in token order, read through its block table."""
        self._check_layer(layer)
        if length < 0:
            raise ValueError(f"length must be >= 0, got {length}")
        self._check_blocks(block_table)
        slots = slots_for(block_table, torch.arange(length), self.block_size)  # (length,)
        flat = (self.num_slots, self.n_kv_heads, self.head_dim)
        return self.k[layer].view(flat)[slots], self.v[layer].view(flat)[slots]


def paged_attention(q: torch.Tensor, cache: PagedKVCache, layer: int, block_table: list[int], context_len: int,
                    q_positions: torch.Tensor) -> torch.Tensor:
    """Causal GQA attention (T, H, D) of one sequence's queries q (T, H, D) at q_positions (T,) over its cached
    positions 0..context_len-1 (the new tokens' K/V must already be written)."""
    if len(q_positions) and int(q_positions.max()) >= context_len:
        raise ValueError(f"query position {int(q_positions.max())} is beyond context_len {context_len}")
    k, v = cache.gather(layer, block_table, context_len)  # (S, Hkv, D) each
    return causal_attention(q, k, v, q_positions)


@dataclass
class SeqBatch:
    """One engine step in vLLM's flat ("varlen") layout: the tokens of every scheduled sequence, one after another.

    slices[i] = (start, end) of sequence i's tokens in the flat N dimension (a prefill has many, a decode one);
    block_tables[i] its physical blocks; context_lens[i] its length after this step; slots (N,) where each new
    token's K/V goes; positions (N,) each token's position in its sequence.
    """

    slices: list[tuple[int, int]]
    block_tables: list[list[int]]
    context_lens: list[int]
    slots: torch.Tensor
    positions: torch.Tensor

    def __post_init__(self):
        n = len(self.slots)
        if not len(self.slices) == len(self.block_tables) == len(self.context_lens):
            raise ValueError(f"{len(self.slices)} slices, {len(self.block_tables)} block tables and "
                             f"{len(self.context_lens)} context lengths: one of each per sequence")
        if self.positions.shape != (n,):
            raise ValueError(f"positions {tuple(self.positions.shape)} and slots ({n},) must match")
        end = 0
        for (s, e), clen in zip(self.slices, self.context_lens):
            if s != end or e <= s:
                raise ValueError(f"slices must tile the token dimension in order, got {self.slices}")
            if int(self.positions[s:e].max()) >= clen:
                raise ValueError(f"a token at position {int(self.positions[s:e].max())} is beyond its sequence's "
                                 f"context_len {clen}")
            end = e
        if end != n:
            raise ValueError(f"slices cover {end} tokens, slots has {n}")


class PagedAttention:
    """The attention backend of one step: writes the new K/V at their slots, then attends per sequence."""

    def __init__(self, cache: PagedKVCache, batch: SeqBatch):
        self.cache, self.batch = cache, batch
        for (s, e), table in zip(batch.slices, batch.block_tables):  # the slots must be the block tables' lookup
            if not torch.equal(batch.slots[s:e], slots_for(table, batch.positions[s:e], cache.block_size)):
                raise ValueError(f"slots of tokens {s}..{e} disagree with their block table {table}")

    def __call__(self, layer: int, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        b = self.batch
        self.cache.write(layer, b.slots, k, v)
        out = torch.empty_like(q)  # (N, H, D)
        for (s, e), table, clen in zip(b.slices, b.block_tables, b.context_lens):
            out[s:e] = paged_attention(q[s:e], self.cache, layer, table, clen, b.positions[s:e])
        return out


class FlatPagedAttention(PagedAttention):
    """PagedAttention for a whole step in a handful of tensor ops per layer, instead of a Python loop per sequence.

    The B sequences of the step are padded to a (B, T) grid of queries and a (B, S) grid of key slots read through
    their block tables (T: the longest chunk, S: the longest context); one masked, batched softmax(q kᵀ/√D) v does
    all of them. Padded keys are masked (weight exactly 0), padded queries are computed and dropped. Same math as
    `PagedAttention` (its per-sequence loop is the readable reference; tests/test_engine.py compares them); on a CPU a
    small op costs tens of µs, so 16 sequences × 30 layers × ~10 ops per step would cost more than the matmuls.
    """

    def __init__(self, cache: PagedKVCache, batch: SeqBatch):
        super().__init__(cache, batch)
        B, bs = len(batch.slices), cache.block_size
        T = max(e - s for s, e in batch.slices)
        S = max(batch.context_lens)
        N = len(batch.slots)
        q_index = torch.full((B, T), N, dtype=torch.long)  # (B, T) row of each query in the flat batch; N = padding
        q_pos = torch.zeros((B, T), dtype=torch.long)  # (B, T)
        key_slots = torch.zeros((B, S), dtype=torch.long)  # (B, S) cache slot of each key position; 0 = padding
        key_pos = torch.arange(S)  # (S,)
        for i, ((s, e), table, clen) in enumerate(zip(batch.slices, batch.block_tables, batch.context_lens)):
            q_index[i, :e - s] = torch.arange(s, e)
            q_pos[i, :e - s] = batch.positions[s:e]
            t = torch.as_tensor(table, dtype=torch.long)
            key_slots[i, :clen] = t[key_pos[:clen] // bs] * bs + key_pos[:clen] % bs
        # query at position p sees keys 0..p (padded queries sit at position 0: they see key 0, no all -inf row)
        self.visible = key_pos[None, None, :] <= q_pos[:, :, None]  # (B, T, S)
        self.q_index, self.key_slots = q_index, key_slots
        self.out_index = (q_index.flatten() < N).nonzero().squeeze(1)  # the real queries, in flat order

    def __call__(self, layer: int, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        c = self.cache
        c.write(layer, self.batch.slots, k, v)
        N, H, D = q.shape
        Hkv, (B, T), S = c.n_kv_heads, self.q_index.shape, self.key_slots.shape[1]
        g = H // Hkv  # GQA: query heads j*g .. j*g+g-1 read kv head j; fold them into the query rows (no copy of K/V)
        flat = (c.num_slots, Hkv, D)
        keys = c.k[layer].view(flat)[self.key_slots].permute(0, 2, 3, 1)  # (B, Hkv, D, S)
        vals = c.v[layer].view(flat)[self.key_slots].transpose(1, 2)  # (B, Hkv, S, D)
        qp = torch.cat([q, q.new_zeros(1, H, D)])[self.q_index]  # (B, T, H, D)
        qp = qp.view(B, T, Hkv, g, D).permute(0, 2, 3, 1, 4).reshape(B, Hkv, g * T, D)  # (B, Hkv, g*T, D)
        att = (qp @ keys) * (1.0 / math.sqrt(D))  # (B, Hkv, g*T, S)
        visible = self.visible[:, None, None].expand(B, 1, g, T, S).reshape(B, 1, g * T, S)
        att = att.masked_fill(~visible, float("-inf")).softmax(dim=-1)
        out = (att @ vals).view(B, Hkv, g, T, D).permute(0, 3, 1, 2, 4).reshape(B * T, H, D)  # (B*T, H, D)
        return out[self.out_index]  # (N, H, D)
