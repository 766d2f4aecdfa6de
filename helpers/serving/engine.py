"""A serving engine from scratch: requests in, one token per running sequence per step out (vLLM's LLMEngine, small).

Each `step()`:
1. the scheduler (scheduler.py) picks the sequences that run and how many tokens each feeds (a prompt chunk, or the
   one token sampled last step), reserving their KV slots in the block allocator (block_allocator.py), preempting
   the newest sequence when blocks run out;
2. copy-on-write block copies are applied to the paged KV cache (paged_attention.py);
3. ONE forward pass of the model over all those tokens, flattened (vLLM's "varlen" layout), attention for all of them
   at once (`FlatPagedAttention`): a step for 16 sequences costs far less than 16 steps of one (it reads all the
   weights once either way), which is why batching pays;
4. each sequence whose tokens are all computed samples its next token (greedy, or temperature / top-p with its own
   seeded generator); a request with n > 1 forks into n samples here, after its prompt was prefilled once, sharing
   the prompt's blocks; finished sequences free their blocks at once, so the next step can admit someone else.

`replay` feeds an arrival trace in real time and records when each request got its first and last token.
"""
from __future__ import annotations

import itertools
import time
from dataclasses import dataclass

import torch

from .block_allocator import BlockAllocator
from .paged_attention import FlatPagedAttention, PagedKVCache, SeqBatch
from .scheduler import POLICIES, Sequence


@dataclass(frozen=True)
class SamplingParams:
    max_tokens: int = 16
    temperature: float = 0.0  # 0: greedy (argmax)
    top_p: float = 1.0  # nucleus sampling: keep the smallest set of tokens whose probability reaches top_p
    seed: int | None = None  # per-request: the same seed gives the same samples, whatever else is in the batch
    stop_token_ids: tuple[int, ...] = ()
    n: int = 1  # parallel samples of the same prompt

    def __post_init__(self):
        if not isinstance(self.max_tokens, int) or self.max_tokens < 1:
            raise ValueError(f"max_tokens must be an integer >= 1, got {self.max_tokens!r}")
        if not self.temperature >= 0:
            raise ValueError(f"temperature must be >= 0, got {self.temperature!r}")
        if not 0 < self.top_p <= 1:
            raise ValueError(f"top_p must lie in (0, 1], got {self.top_p!r}")
        if not isinstance(self.n, int) or self.n < 1:
            raise ValueError(f"n must be an integer >= 1, got {self.n!r}")
        object.__setattr__(self, "stop_token_ids", tuple(int(t) for t in self.stop_token_ids))


@dataclass
class StepOutput:
    request_id: str
    index: int  # which of the request's n samples
    token_id: int  # -1 for an abort
    finished: bool
    finish_reason: str | None = None  # "stop" | "length" | "abort"


def sample(logits: torch.Tensor, params: SamplingParams, generator: torch.Generator | None) -> int:
    """One token from logits (V,): argmax at temperature 0, else softmax(logits / T) restricted to the top-p nucleus."""
    if params.temperature == 0:
        return int(logits.argmax())
    probs = torch.softmax(logits.float() / params.temperature, dim=-1)  # (V,)
    if params.top_p < 1:
        p, idx = probs.sort(descending=True)
        keep = p.cumsum(0) - p < params.top_p  # a token stays if the mass before it is below top_p (>= 1 kept)
        probs = torch.zeros_like(probs).scatter_(0, idx[keep], p[keep])
    return int(torch.multinomial(probs, 1, generator=generator))


class Engine:
    """Continuous-batching LLM engine over a paged KV cache (see the module docstring)."""

    def __init__(self, model, *, num_blocks: int, block_size: int = 16, max_num_seqs: int = 16,
                 max_num_batched_tokens: int = 512, policy: str = "continuous", eos_token_id: int | None = None,
                 prefix_caching: bool = True, attention=FlatPagedAttention):
        if policy not in POLICIES:
            raise ValueError(f"unknown policy {policy!r}; known: {', '.join(POLICIES)}")
        cfg = model.cfg
        self.model, self.eos_token_id, self.policy, self.attention = model, eos_token_id, policy, attention
        self.cache = PagedKVCache(cfg.n_layers, num_blocks, block_size, cfg.n_kv_heads, cfg.head_dim,
                                  dtype=next(model.parameters()).dtype)
        self.allocator = BlockAllocator(num_blocks, block_size)
        self.scheduler = POLICIES[policy](self.allocator, max_num_seqs, max_num_batched_tokens, prefix_caching)
        self.max_context = min(cfg.max_seq_len, num_blocks * block_size)  # one sequence must fit alone
        self.requests: dict[str, list[Sequence]] = {}  # request id -> its sequences (n of them after the fork)
        self._ids = itertools.count()
        self.num_steps = self.num_tokens_computed = self.num_cow_copies = 0
        self.step_log: list[dict] = []  # per step: which (request, sample, tokens) ran, how many waited, end time

    def add_request(self, prompt_ids: list[int], params: SamplingParams | None = None,
                    request_id: str | None = None, arrival: float | None = None) -> str:
        params = params or SamplingParams()
        prompt = [int(t) for t in prompt_ids]
        if not prompt:
            raise ValueError("the prompt must have at least one token")
        if any(not 0 <= t < self.model.cfg.vocab_size for t in prompt):
            raise ValueError(f"prompt token ids must lie in [0, {self.model.cfg.vocab_size})")
        if len(prompt) + params.max_tokens > self.max_context:
            raise ValueError(f"prompt ({len(prompt)} tokens) + max_tokens ({params.max_tokens}) exceeds the context "
                             f"of {self.max_context} tokens")
        request_id = request_id if request_id is not None else f"req-{next(self._ids)}"
        if request_id in self.requests:
            raise ValueError(f"request id {request_id!r} is already in use")
        seq = Sequence(next(self._ids), request_id, prompt, params, index=0, n_fork=params.n,
                       arrival=time.perf_counter() if arrival is None else arrival, rng=self._generator(params, 0))
        self.requests[request_id] = [seq]
        self.scheduler.add(seq)
        return request_id

    @staticmethod
    def _generator(params: SamplingParams, index: int) -> torch.Generator | None:
        if params.temperature == 0:
            return None
        g = torch.Generator()
        seed = int(torch.randint(2**62, ())) if params.seed is None else params.seed
        return g.manual_seed(hash((seed, index)) & (2**63 - 1))  # sample i of a request has its own stream

    def has_unfinished(self) -> bool:
        return bool(self.scheduler.waiting or self.scheduler.running)

    def step(self) -> list[StepOutput]:
        batch = self.scheduler.schedule()
        if not batch.scheduled:
            return []
        self.cache.copy_blocks(batch.copies)
        tokens, positions, slices = [], [], []
        for s in batch.scheduled:  # flatten: each sequence's new tokens, one after another
            start = s.seq.num_computed
            tokens += s.seq.tokens[start:start + s.n_tokens]
            positions += range(start, start + s.n_tokens)
            slices.append((len(tokens) - s.n_tokens, len(tokens)))
        seq_batch = SeqBatch(slices=slices, block_tables=[list(s.seq.table.blocks) for s in batch.scheduled],
                             context_lens=[s.seq.num_computed + s.n_tokens for s in batch.scheduled],
                             slots=torch.tensor([x for s in batch.scheduled for x in s.slots], dtype=torch.long),
                             positions=torch.tensor(positions, dtype=torch.long))
        with torch.inference_mode():
            last = torch.tensor([end - 1 for _, end in slices], dtype=torch.long)  # each sequence's newest token
            logits = self.model(torch.tensor(tokens, dtype=torch.long), seq_batch.positions,
                                self.attention(self.cache, seq_batch), rows=last)  # (len(scheduled), V)
        self.num_steps += 1
        self.num_tokens_computed += len(tokens)
        self.num_cow_copies += len(batch.copies)
        self.step_log.append({"seqs": [(s.seq.request_id, s.seq.index, s.n_tokens) for s in batch.scheduled],
                              "waiting": len(self.scheduler.waiting), "preempted": len(batch.preempted),
                              "end": time.perf_counter()})
        outputs = []
        for row, s in enumerate(batch.scheduled):
            seq = s.seq
            seq.num_computed += s.n_tokens
            if seq.num_uncomputed > 0:  # a prompt chunk: nothing to sample yet
                continue
            for sample_seq in self._fork(seq):  # parallel sampling: n sequences from the same last logits
                outputs.append(self._append(sample_seq, sample(logits[row], seq.params, sample_seq.rng)))
        return outputs

    def _fork(self, seq: Sequence) -> list[Sequence]:
        if seq.n_fork == 1:
            return [seq]
        children = []
        for i in range(1, seq.n_fork):
            child = Sequence(next(self._ids), seq.request_id, seq.prompt, seq.params, index=i, arrival=seq.arrival,
                             rng=self._generator(seq.params, i))
            self.scheduler.fork(seq, child)
            children.append(child)
        seq.n_fork = 1
        self.requests[seq.request_id] += children
        return [seq] + children

    def _append(self, seq: Sequence, token: int) -> StepOutput:
        seq.output.append(token)
        reason = None
        if token == self.eos_token_id or token in seq.params.stop_token_ids:
            reason = "stop"
        elif len(seq.output) >= seq.params.max_tokens:
            reason = "length"
        if reason:
            self.scheduler.finish(seq)
        return StepOutput(seq.request_id, seq.index, token, reason is not None, reason)

    def abort(self, request_id: str) -> list[StepOutput]:
        """Stop a request (e.g. its client went away) and free its blocks; the aborted samples' outputs."""
        out = []
        for seq in self.requests.get(request_id, []):
            if not seq.finished:
                self.scheduler.finish(seq)
                out.append(StepOutput(request_id, seq.index, -1, True, "abort"))
        return out

    def outputs(self, request_id: str) -> list[list[int]]:
        """The token ids generated so far for each of the request's samples."""
        return [list(s.output) for s in sorted(self.requests[request_id], key=lambda s: s.index)]

    def stats(self) -> dict:
        a = self.allocator
        return {"running": len(self.scheduler.running), "waiting": len(self.scheduler.waiting),
                "blocks_used": a.num_blocks - a.num_free, "blocks_free": a.num_free,
                "preemptions": self.scheduler.num_preemptions, "steps": self.num_steps,
                "tokens_computed": self.num_tokens_computed, "cow_copies": self.num_cow_copies,
                "prefix_blocks_shared": a.prefix_hits, "prefix_tokens_reused": self.scheduler.prefix_tokens_reused}


def replay(engine: Engine, trace: list[tuple[float, list[int], SamplingParams]], clock=time.perf_counter,
           max_seconds: float | None = None, sleep=time.sleep) -> list[dict]:
    """Run an arrival trace in real time: request i is added `trace[i][0]` seconds after the start, and the engine
    steps while it has work. Bounded by len(trace) and `max_seconds` (what is unfinished then is aborted).

    Returns one dict per request (times in seconds from the start): arrival, first_token, finish, n_tokens (all
    samples), token_ids (sample 0), samples (all n), token_times (sample 0's tokens), finish_reason (sample 0's)."""
    order = sorted(range(len(trace)), key=lambda i: trace[i][0])
    recs = [{"arrival": float(a), "first_token": None, "finish": None, "n_tokens": 0, "token_ids": [],
             "samples": [[] for _ in range(p.n)], "token_times": [], "finish_reason": None, "_open": p.n}
            for a, _, p in trace]
    ids = {}
    t0, k = clock(), 0
    while k < len(order) or engine.has_unfinished():
        now = clock() - t0
        if max_seconds is not None and now > max_seconds:
            outs = [o for rid in ids for o in engine.abort(rid)]
        else:
            while k < len(order) and trace[order[k]][0] <= now:
                i = order[k]
                rid = engine.add_request(trace[i][1], trace[i][2], request_id=f"replay-{i}", arrival=t0 + trace[i][0])
                ids[rid] = i
                k += 1
            if not engine.has_unfinished():
                sleep(max(0.0, trace[order[k]][0] - (clock() - t0)))
                continue
            outs = engine.step()
        t = clock() - t0
        for o in outs:
            r = recs[ids[o.request_id]]
            if o.token_id >= 0:
                r["first_token"] = r["first_token"] if r["first_token"] is not None else t
                r["samples"][o.index].append(o.token_id)
                r["n_tokens"] += 1
                if o.index == 0:
                    r["token_times"].append(t)
            if o.finished:
                r["_open"] -= 1
                if o.index == 0:
                    r["finish_reason"] = o.finish_reason
                if r["_open"] == 0:
                    r["finish"] = t
        if max_seconds is not None and now > max_seconds:
            break
    for r in recs:
        r["token_ids"] = r["samples"][0]
        del r["_open"]
    return recs
