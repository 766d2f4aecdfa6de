"""The 1.6 capstone's inference pipeline with its phases marked, with and without a KV cache, and a fair timer.

`generate(model, tok, prompt, n_new, use_cache)` runs greedy decoding of a Hugging Face causal LM (SmolLM2 here)
as a serving loop does, each phase inside a `record_function` range so that a profile shows where time goes:
tokenize → prefill (forward on the prompt) → [sample (argmax + streaming detokenization) → decode (forward)]*.

Without a KV cache (`use_cache=False`, what the course GPT's `generate` does) every decode step runs the model on
the whole sequence again: step t costs a forward over P + t tokens, Σ_t (P + t) token-forwards in all. With the
cache (Pope et al. 2022, "Efficiently Scaling Transformer Inference", §2) the keys and values of past tokens are
kept and each step runs one token: P + n - 1 token-forwards. Same mathematics, so greedy tokens must not change.

`interleaved_min(fns, repeats)` times several variants in the same run, round-robin, and keeps each one's minimum:
the minimum is the run least disturbed by other processes, and interleaving exposes every variant to the same
machine state (a slow minute hits all of them), so their ratio is a fair speed-up.
"""
from __future__ import annotations

import time

import torch
from torch.profiler import record_function

PHASES = ("tokenize", "prefill", "sample", "decode")


def recompute_step(model, ids, nxt, past):
    """One decode step without a cache: the whole sequence `ids` (1, P + t) through the model again."""
    return model(ids, use_cache=False).logits[:, -1], None                    # (1, V), no past


def cached_step(model, ids, nxt, past):
    """One decode step with a KV cache: only the new token `nxt` (1, 1); the past keys and values are reused."""
    out = model(nxt, past_key_values=past, use_cache=True)
    return out.logits[:, -1], out.past_key_values                             # (1, V), past grown by one


@torch.inference_mode()
def generate(model, tok, prompt: str, n_new: int, use_cache: bool, step=None) -> tuple[list[int], str]:
    """Greedy `n_new` tokens after `prompt`: (new token ids, their text). Phases in record_function ranges.
    `step(model, ids, nxt, past) -> (logits, past)` is the decode step: `cached_step` or `recompute_step` by
    default, or one of your own (the prefill keeps its cache when `use_cache`)."""
    if not isinstance(n_new, int) or n_new < 1:
        raise ValueError(f"n_new must be an int >= 1, got {n_new!r}")
    step = step or (cached_step if use_cache else recompute_step)
    device = next(model.parameters()).device
    with record_function("tokenize"):
        ids = tok(prompt, return_tensors="pt").input_ids.to(device)           # (1, P)
    with record_function("prefill"):
        out = model(ids, use_cache=use_cache)
        logits = out.logits[:, -1]                                            # (1, V)
    past = out.past_key_values if use_cache else None
    new, text = [], ""
    for t in range(n_new):
        with record_function("sample"):
            nxt = logits.argmax(dim=-1, keepdim=True)                         # (1, 1) greedy
            new.append(int(nxt))
            text = tok.decode(new)                                            # streaming: the text so far
            ids = torch.cat([ids, nxt], dim=1)                                # (1, P + t + 1)
        if t + 1 < n_new:
            with record_function("decode"):
                logits, past = step(model, ids, nxt, past)
    return new, text


def token_forwards(prompt_len: int, n_new: int, use_cache: bool) -> int:
    """Tokens pushed through the model by `generate`: P + Σ_{t=1}^{n-1} (P + t) without cache, P + n - 1 with."""
    if use_cache:
        return prompt_len + n_new - 1
    return prompt_len + sum(prompt_len + t for t in range(1, n_new))


def interleaved_min(fns: dict, repeats: int = 3) -> tuple[dict[str, float], dict[str, list[float]]]:
    """({name: min seconds}, {name: every time}) over `repeats` calls each, round-robin (a, b, a, b, …)."""
    if not fns or not all(callable(f) for f in fns.values()):
        raise TypeError("fns must be a non-empty {name: callable} dict")
    if not isinstance(repeats, int) or repeats < 1:
        raise ValueError(f"repeats must be an int >= 1, got {repeats!r}")
    times = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            t0 = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - t0)
    return {name: min(ts) for name, ts in times.items()}, times
