"""Which sequences run in the next forward pass, and how many of their tokens: the serving engine's policy.

Two policies over the same machinery (a waiting queue, a running list, a token budget per step, the block allocator):

- **static** batching: when the previous batch has finished, take what is waiting (up to `max_num_seqs`) as the new
  batch and run it to completion; a sequence that finishes early leaves its slot empty until the longest one ends,
  and new arrivals wait for the whole batch. (HF `generate` on a padded batch, or a server that batches requests.)
- **continuous** (iteration-level) batching (Orca, Yu et al., OSDI 2022; vLLM): the batch is re-formed at *every*
  step. Running sequences go first (one decode token each, or the next chunk of a prompt), then waiting ones are
  admitted while the token budget, the sequence limit and the free KV blocks allow (`admit`). A prompt longer than
  the budget left is prefilled in chunks over several steps (chunked prefill), so a long prompt never stalls decodes.

When a running sequence needs a block and none is free, the newest running sequence is **preempted by recompute**
(vLLM's default): its blocks are freed and it goes back to the front of the waiting queue with the tokens it already
generated; when readmitted its prompt + output are prefilled again and it continues exactly where it stopped.

Knows nothing of tensors or HTTP: the engine turns a `Batch` into one flat forward pass.
"""
from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from typing import Any

from .block_allocator import BlockAllocator, BlockTable, OutOfBlocks, block_hashes


@dataclass(eq=False)
class Sequence:
    """One stream of tokens: a request's prompt and what has been generated for it so far."""
    seq_id: int
    request_id: str
    prompt: list[int]
    params: Any = None  # the engine's SamplingParams (the scheduler never reads it)
    index: int = 0  # which of the request's n samples
    n_fork: int = 1  # > 1: fork into this many samples once the prompt is computed (parallel sampling)
    arrival: float = 0.0
    output: list[int] = field(default_factory=list)
    table: BlockTable | None = None  # None while waiting: a waiting sequence holds no blocks
    num_computed: int = 0  # tokens whose K/V are in the cache
    hashes: list[int] = field(default_factory=list)  # content hashes of the prompt's shareable full blocks
    finished: bool = False
    rng: Any = None  # the engine's per-sample random generator (kept across preemption: reproducible sampling)

    @property
    def tokens(self) -> list[int]:
        return self.prompt + self.output

    @property
    def num_uncomputed(self) -> int:
        """Tokens still to feed through the model before the next one can be sampled (1 while decoding)."""
        return len(self.prompt) + len(self.output) - self.num_computed


@dataclass
class Scheduled:
    seq: Sequence
    n_tokens: int  # tokens seq.tokens[seq.num_computed : seq.num_computed + n_tokens] run this step
    slots: list[int]  # their KV slots (block * block_size + offset)


@dataclass
class Batch:
    scheduled: list[Scheduled]
    copies: list[tuple[int, int]]  # copy-on-write (src, dst) block pairs to apply before the forward pass
    preempted: list[Sequence]

    @property
    def num_tokens(self) -> int:
        return sum(s.n_tokens for s in self.scheduled)


def admit(scheduler: "Scheduler", seq: Sequence, n_tokens: int, blocks_needed: int) -> bool:
    """The continuous policy's admission rule for the head of the waiting queue: room in the batch for all its
    samples, tokens left in this step's budget, and free blocks for its first chunk while keeping a small reserve
    (the watermark) for the running sequences' next decode steps, so that admission does not cause preemption."""
    fits_batch = len(scheduler.running) + seq.n_fork <= scheduler.max_num_seqs
    reserve = scheduler.watermark if scheduler.running else 0  # alone, a sequence may use every block
    fits_memory = blocks_needed <= scheduler.allocator.num_free - reserve
    return fits_batch and fits_memory and n_tokens > 0


class Scheduler:
    """The waiting queue, the running list and one step's plan: `schedule()` -> Batch."""

    static = False

    def __init__(self, allocator: BlockAllocator, max_num_seqs: int = 16, max_num_batched_tokens: int = 512,
                 prefix_caching: bool = True, admit=admit):
        if max_num_seqs < 1 or max_num_batched_tokens < 1:
            raise ValueError("max_num_seqs and max_num_batched_tokens must be >= 1")
        self.allocator, self.max_num_seqs, self.max_num_batched_tokens = allocator, max_num_seqs, max_num_batched_tokens
        self.prefix_caching, self.admit = prefix_caching, admit
        self.watermark = max(1, allocator.num_blocks // 100)  # blocks kept free when admitting (vLLM: 1 %)
        self.waiting: deque[Sequence] = deque()
        self.running: list[Sequence] = []
        self.num_preemptions = 0
        self.prefix_tokens_reused = 0

    def add(self, seq: Sequence) -> None:
        self.waiting.append(seq)

    def schedule(self) -> Batch:
        """This step: every running sequence's next tokens (preempting the newest when blocks run out), then new
        sequences admitted from the head of the waiting queue (first come, first served)."""
        budget, batch = self.max_num_batched_tokens, Batch([], [], [])
        batch_open = not self.running  # static batching admits only when the previous batch is done
        i = 0
        while i < len(self.running) and budget > 0:
            seq = self.running[i]
            n = min(seq.num_uncomputed, budget)
            while True:
                try:
                    slots, copies = seq.table.append_slots(n)
                    break
                except OutOfBlocks:  # a clean refusal: free the newest sequence's blocks and try again
                    victim = self.running[-1]
                    self.preempt(victim)
                    batch.preempted.append(victim)
                    if victim is seq:
                        break
            if seq.table is None:  # it was its own victim (the newest): nothing of it runs this step
                continue
            self._scheduled(batch, seq, n, slots, copies)
            budget -= n
            i += 1
        if batch.preempted or (self.static and not batch_open):
            return batch
        while self.waiting and budget > 0:
            seq = self.waiting[0]
            shareable = (len(seq.tokens) - 1) // self.allocator.block_size  # the last token is always computed
            if self.prefix_caching and not seq.hashes and shareable:
                seq.hashes = block_hashes(seq.tokens[:shareable * self.allocator.block_size], self.allocator.block_size)
            cached = self._cached_tokens(seq)
            n = min(len(seq.tokens) - cached, budget)
            need = -(-(cached + n) // self.allocator.block_size) - cached // self.allocator.block_size
            if not self.admit(self, seq, n, need):
                break
            seq.table = BlockTable(self.allocator)
            seq.num_computed = seq.table.share_prefix(seq.hashes) if self.prefix_caching else 0
            try:
                slots, copies = seq.table.append_slots(n)
            except OutOfBlocks:  # an admission rule that ignored memory: refuse cleanly, seq keeps waiting
                seq.table.free()
                seq.table, seq.num_computed = None, 0
                break
            self.prefix_tokens_reused += seq.num_computed
            self.running.append(self.waiting.popleft())
            self._scheduled(batch, seq, n, slots, copies)
            budget -= n
        return batch

    def _scheduled(self, batch: Batch, seq: Sequence, n: int, slots: list[int], copies: list) -> None:
        batch.scheduled.append(Scheduled(seq, n, slots))
        batch.copies += copies
        if seq.hashes:  # prompt blocks this step fills completely are shareable at once: within a step every K/V is
            seq.table.publish(seq.hashes, seq.num_computed + n)  # written before any attention reads (PagedAttention)

    def _cached_tokens(self, seq: Sequence) -> int:
        """Prompt tokens whose blocks are live in the prefix cache (without taking them yet)."""
        if not self.prefix_caching:
            return 0
        n = 0
        for h in seq.hashes:
            if h not in self.allocator._cached:
                break
            n += 1
        return n * self.allocator.block_size

    def preempt(self, seq: Sequence) -> None:
        """Recompute-preemption: free all of seq's blocks, put it first in line; its output so far is kept."""
        seq.table.free()
        seq.table, seq.num_computed = None, 0
        self.running.remove(seq)
        self.waiting.appendleft(seq)
        self.num_preemptions += 1

    def fork(self, seq: Sequence, child: Sequence) -> None:
        """Run `child` beside `seq`, sharing all of its blocks (copy-on-write at the first divergent write)."""
        child.table, child.num_computed, child.hashes = seq.table.fork(), seq.num_computed, seq.hashes
        self.running.append(child)

    def finish(self, seq: Sequence) -> None:
        """Retire a sequence (finished or aborted), wherever it is; its blocks go back to the free list."""
        seq.finished = True
        if seq.table is not None:
            seq.table.free()
            seq.table = None
        if seq in self.running:
            self.running.remove(seq)
        elif seq in self.waiting:
            self.waiting.remove(seq)


class ContinuousScheduler(Scheduler):
    """Iteration-level batching: the batch is re-formed every step."""


class StaticScheduler(Scheduler):
    """Static batching: admit only when the running batch is empty, then run that batch to completion."""

    static = True


POLICIES = {"continuous": ContinuousScheduler, "static": StaticScheduler}
