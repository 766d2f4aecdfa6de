"""torch.profiler on a callable, its Chrome trace exported and read back as plain JSON.

A profiler answers "where did the time go?". `torch.profiler` records every operator call (CPU activities here,
CUDA kernels too on a GPU) and exports a Chrome trace: a JSON list of events in the Trace Event Format
(https://docs.google.com/document/d/1CvAClvFfyA5R-PhYUmn5OOQtYMH4h6I0nSsKchNAySU), `{"ph": "X", "name", "ts",
"dur", "tid", "cat"}` with times in microseconds, which chrome://tracing and https://ui.perfetto.dev draw as a
timeline. Reading that file back with `json` (not through the profiler's own objects) is what a CI script or a
regression dashboard does; `top_ops` and `phases` below do it.

Self time of an operator = its duration minus the durations of the operators it called (its direct children on
the same thread) — the ranking `prof.key_averages().table(sort_by="self_cpu_time_total")` prints.
`record_function("name")` ranges appear as events of category "user_annotation": the phases of a program.
"""
from __future__ import annotations

import contextlib
import json
import os
import sys
from collections import defaultdict
from pathlib import Path

import torch
import torch.nn.functional as F
from torch.profiler import ProfilerActivity, profile, record_function


@contextlib.contextmanager
def _quiet_c_stderr():
    """Send C-level writes to file descriptor 2 to /dev/null for the duration (Python's sys.stderr is untouched)."""
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        with open(os.devnull, "w") as null:
            os.dup2(null.fileno(), 2)
            yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


def profile_callable(fn, trace_path, *, cuda: bool = False, record_shapes=True, profile_memory=True, with_stack=False):
    """Run fn() once under torch.profiler (CPU activities, + CUDA when `cuda`), export a Chrome trace to
    `trace_path`. Returns (fn's result, the profiler object).

    with_stack=True adds the Python call stack of every op (python_function events: slower, bigger traces); off
    by default because torch 2.13 (CPU) intermittently fails to parse its own events then (UnicodeDecodeError in
    key_averages)."""
    if not callable(fn):
        raise TypeError(f"fn must be callable, got {type(fn).__name__}")
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if cuda else [])
    prof = profile(activities=activities, record_shapes=record_shapes, profile_memory=profile_memory,
                   with_stack=with_stack)
    with _quiet_c_stderr():      # Kineto prints a timestamped "USDT: ... profiler_start" line to fd 2 on start and stop
        prof.start()
    try:
        out = fn()               # fn runs with stderr untouched: its warnings and errors still show
    finally:
        with _quiet_c_stderr():
            prof.stop()
    prof.key_averages()          # parse the events before exporting (torch 2.13 may fail to parse them after)
    Path(trace_path).parent.mkdir(parents=True, exist_ok=True)
    prof.export_chrome_trace(str(trace_path))
    return out, prof


def load_trace(path) -> list[dict]:
    """The complete events ("ph": "X") of a Chrome trace JSON file."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"no trace at {path}: export one with profile_callable(fn, path) first")
    data = json.loads(path.read_text())
    events = data["traceEvents"] if isinstance(data, dict) else data
    return [e for e in events if e.get("ph") == "X" and "dur" in e]


def self_times(events: list[dict], category: str = "cpu_op") -> dict[str, dict]:
    """{op name: {"self_us", "total_us", "count"}} over events of `category`: self = dur - direct children."""
    stats = defaultdict(lambda: {"self_us": 0.0, "total_us": 0.0, "count": 0})
    by_thread = defaultdict(list)
    for e in events:
        if e.get("cat") == category:
            by_thread[(e.get("pid"), e.get("tid"))].append(e)
    for evs in by_thread.values():
        evs.sort(key=lambda e: (e["ts"], -e["dur"]))          # parents before the children they contain
        stack = []                                            # open events: [end, event, children's time]
        for e in evs + [None]:
            while stack and (e is None or e["ts"] >= stack[-1][0] - 1e-3):   # close what ended before e
                end, done, child = stack.pop()
                s = stats[done["name"]]
                s["self_us"] += done["dur"] - child
                s["total_us"] += done["dur"]
                s["count"] += 1
                if stack:
                    stack[-1][2] += done["dur"]
            if e is not None:
                stack.append([e["ts"] + e["dur"], e, 0.0])
    return dict(stats)


def top_ops(events: list[dict], n: int = 10) -> list[tuple[str, float, int]]:
    """The `n` operators with the largest total self time: [(name, self_us, calls)], largest first."""
    stats = self_times(events)
    ranked = sorted(stats.items(), key=lambda kv: -kv[1]["self_us"])[:n]
    return [(name, s["self_us"], s["count"]) for name, s in ranked]


def phases(events: list[dict], names=None) -> list[tuple[str, float, float]]:
    """record_function ranges as [(name, start_us, dur_us)] in time order (only `names` when given)."""
    out = [(e["name"], float(e["ts"]), float(e["dur"])) for e in events if e.get("cat") == "user_annotation"
           and (names is None or e["name"] in names)]
    return sorted(out, key=lambda p: p[1])


@torch.no_grad()
def phased_generate(model, encode, decode, prompt: str, max_new_tokens: int, seed: int = 0) -> str:
    """GPT.generate with its phases marked by record_function: tokenize → prefill (forward on the prompt) →
    [sample → decode (forward on the context)]* → sample → detokenize, all inside "generate".
    No KV cache (as GPT.generate): each decode step re-reads the last block_size tokens."""
    gen = torch.Generator().manual_seed(seed)
    block = model.config.block_size
    with record_function("generate"):
        with record_function("tokenize"):
            idx = torch.tensor([encode(prompt)], dtype=torch.long)             # (1, T)
        with record_function("prefill"):
            logits, _ = model(idx[:, -block:])                                 # (1, T, V)
        for step in range(max_new_tokens):
            with record_function("sample"):
                probs = F.softmax(logits[:, -1, :], dim=-1)                    # (1, V)
                idx = torch.cat([idx, torch.multinomial(probs, 1, generator=gen)], dim=1)
            if step + 1 < max_new_tokens:
                with record_function("decode"):
                    logits, _ = model(idx[:, -block:])
        with record_function("detokenize"):
            text = decode(idx[0].tolist())
    return text
