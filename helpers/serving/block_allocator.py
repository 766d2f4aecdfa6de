"""PagedAttention's block manager: the KV cache cut into fixed-size blocks, handed out like pages of virtual memory.

vLLM (Kwon et al., SOSP 2023, "Efficient Memory Management for Large Language Model Serving with PagedAttention")
stores a sequence's keys and values in blocks of `block_size` token slots that need not be contiguous. Each sequence
keeps a *block table* (logical block i -> physical block id); the allocator keeps a free list and a reference count
per physical block, so that several sequences can point at the same block:

- parallel sampling (n > 1): the n samples of one prompt share the prompt's blocks after prefill (`BlockTable.fork`);
- prefix sharing: requests whose prompts start with the same full blocks of tokens share them (`block_hashes`, the
  hash of a block's token ids chained with its prefix's, as vLLM's automatic prefix caching does);
- copy-on-write: the first write into a shared, partially filled last block first copies it to a private block.

This file knows nothing of attention or tensors: it hands out block ids and slot numbers (slot = block * block_size +
offset); the engine copies and writes the K/V (`paged_attention.PagedKVCache`). Running out of blocks raises
`OutOfBlocks` *before* any state changes, so the caller (the scheduler) can preempt someone and try again.
"""
from __future__ import annotations


class OutOfBlocks(RuntimeError):
    """Not enough free blocks: raised before any state changed, so the refusal is clean and recoverable."""


class BlockAllocator:
    """A free list and a reference count per physical block, plus the prefix cache (content hash -> live block)."""

    def __init__(self, num_blocks: int, block_size: int):
        if num_blocks < 1 or block_size < 1:
            raise ValueError(f"need num_blocks >= 1 and block_size >= 1, got {num_blocks}, {block_size}")
        self.num_blocks, self.block_size = num_blocks, block_size
        self._free = list(range(num_blocks - 1, -1, -1))  # a stack: allocate() hands out 0, 1, 2, ... first
        self._ref = [0] * num_blocks
        self._cached: dict[int, int] = {}  # content hash -> block holding exactly those tokens (full blocks only)
        self._hash_of: dict[int, int] = {}  # block -> its content hash (the inverse map)
        self.prefix_hits = 0  # blocks reused through the prefix cache instead of allocated and recomputed

    @property
    def num_free(self) -> int:
        return len(self._free)

    def refcount(self, block: int) -> int:
        return self._ref[block]

    def allocate(self) -> int:
        """A fresh block with reference count 1."""
        if not self._free:
            raise OutOfBlocks(f"all {self.num_blocks} KV blocks are in use")
        block = self._free.pop()
        self._ref[block] = 1
        return block

    def fork(self, block: int) -> None:
        """One more owner for an allocated block (it is now shared: writes into it must copy first)."""
        if self._ref[block] < 1:
            raise ValueError(f"fork of free block {block}")
        self._ref[block] += 1

    def free(self, block: int) -> None:
        """One owner fewer; the block returns to the free list (and leaves the prefix cache) at zero."""
        if self._ref[block] < 1:
            raise ValueError(f"double free of block {block}")
        self._ref[block] -= 1
        if self._ref[block] == 0:
            h = self._hash_of.pop(block, None)
            if h is not None:
                del self._cached[h]
            self._free.append(block)

    # -- prefix cache: only live blocks are shared (a freed block forgets its content: simple, never stale) --
    def lookup(self, content_hash: int) -> int | None:
        """The live block holding this content, with one more owner (the caller's); None when not cached."""
        block = self._cached.get(content_hash)
        if block is not None:
            self.fork(block)
            self.prefix_hits += 1
        return block

    def register(self, content_hash: int, block: int) -> None:
        """Publish a full, computed block under its content hash (first writer wins; a block has one hash)."""
        if self._ref[block] < 1:
            raise ValueError(f"register of free block {block}")
        if content_hash not in self._cached and block not in self._hash_of:
            self._cached[content_hash] = block
            self._hash_of[block] = content_hash

    def check_invariants(self, tables: list[list[int]]) -> None:
        """Raise AssertionError unless every block's refcount equals the number of tables that hold it, the free
        list holds exactly the blocks nobody holds (each once), and the prefix cache names only live blocks."""
        held = [0] * self.num_blocks
        for t in tables:
            for b in t:
                held[b] += 1
        assert held == self._ref, f"refcounts {self._ref} != owners {held}"
        assert len(set(self._free)) == len(self._free), f"a block is twice in the free list: {self._free}"
        assert sorted(self._free) == [b for b in range(self.num_blocks) if held[b] == 0], "free list != unowned blocks"
        assert all(self._ref[b] > 0 and self._cached[h] == b for b, h in self._hash_of.items()), "stale prefix cache"
        assert len(self._cached) == len(self._hash_of), "prefix cache maps are not inverse"


def block_hashes(token_ids: list[int], block_size: int) -> list[int]:
    """One hash per *full* block of `token_ids`, each chained with the previous one: equal hashes mean equal
    tokens in this block AND everything before it, so the block's K/V (which depend on the whole prefix) are equal."""
    hashes, h = [], 0
    for i in range(len(token_ids) // block_size):
        h = hash((h, tuple(token_ids[i * block_size:(i + 1) * block_size])))
        hashes.append(h)
    return hashes


class BlockTable:
    """One sequence's logical -> physical block map and how many token slots it has filled."""

    def __init__(self, allocator: BlockAllocator):
        self.allocator = allocator
        self.blocks: list[int] = []
        self.num_tokens = 0

    def _last_is_shared_partial(self) -> bool:
        return self.num_tokens % self.allocator.block_size != 0 and self.allocator.refcount(self.blocks[-1]) > 1

    def blocks_needed(self, n: int) -> int:
        """Blocks that `append_slots(n)` would take from the free list (new blocks + a copy-on-write copy)."""
        if n <= 0:
            return 0
        bs = self.allocator.block_size
        room = len(self.blocks) * bs - self.num_tokens  # free slots left in the last block
        return -(-max(0, n - room) // bs) + int(self._last_is_shared_partial())

    def append_slots(self, n: int) -> tuple[list[int], list[tuple[int, int]]]:
        """Reserve slots for the next n tokens: (their slot numbers, copy-on-write (src, dst) block pairs).
        All or nothing: OutOfBlocks leaves the table and the allocator exactly as they were."""
        need = self.blocks_needed(n)
        if need > self.allocator.num_free:
            raise OutOfBlocks(f"need {need} blocks, {self.allocator.num_free} free")
        copies = []
        if n > 0 and self._last_is_shared_partial():  # copy-on-write: someone else still reads the old block
            src, dst = self.blocks[-1], self.allocator.allocate()
            self.allocator.free(src)
            self.blocks[-1] = dst
            copies.append((src, dst))
        bs = self.allocator.block_size
        while len(self.blocks) * bs < self.num_tokens + n:
            self.blocks.append(self.allocator.allocate())
        slots = [self.blocks[p // bs] * bs + p % bs for p in range(self.num_tokens, self.num_tokens + n)]
        self.num_tokens += n
        return slots, copies

    def share_prefix(self, hashes: list[int]) -> int:
        """On an empty table: adopt the live cached blocks matching the leading `hashes`; returns the tokens covered
        (their K/V need not be computed again)."""
        assert not self.blocks, "share_prefix starts a sequence"
        for h in hashes:
            block = self.allocator.lookup(h)
            if block is None:
                break
            self.blocks.append(block)
        self.num_tokens = len(self.blocks) * self.allocator.block_size
        return self.num_tokens

    def publish(self, hashes: list[int], num_computed: int) -> None:
        """Offer this sequence's full blocks whose K/V are computed (the first num_computed tokens) for sharing."""
        for i in range(min(len(hashes), num_computed // self.allocator.block_size)):
            self.allocator.register(hashes[i], self.blocks[i])

    def fork(self) -> BlockTable:
        """A new table sharing every block (parallel sampling): no copy now, copy-on-write at the first write."""
        child = BlockTable(self.allocator)
        for b in self.blocks:
            self.allocator.fork(b)
        child.blocks, child.num_tokens = list(self.blocks), self.num_tokens
        return child

    def free(self) -> None:
        for b in reversed(self.blocks):  # the tail first: the next allocate() reuses the most recent block
            self.allocator.free(b)
        self.blocks, self.num_tokens = [], 0
