"""A bounded asynchronous load generator for OpenAI-compatible servers, and the numbers serving is judged by.

    specs = [RequestSpec({"prompt": p, "max_tokens": 32, "temperature": 0}) for p in prompts]
    results = run(url, specs, arrivals=poisson_arrivals(len(specs), rate=2.0, seed=0), max_seconds=60)
    summarize(results)  # {"n", "ok", "errors", "ttft_p50", "ttft_p99", "latency_p50", ..., "tokens_per_s", "wall"}

Open loop (`arrivals`: request i is sent at arrivals[i] seconds, whether or not earlier ones have finished — how
users arrive) or closed loop (`concurrency`: at most N in flight — how a benchmark client saturates a server); both
can be combined. Every load is bounded twice: by the number of specs and by `max_seconds` — requests not yet sent at
the deadline are not sent, requests still running are cancelled, and both come back as failed Results that say why.

TTFT (time to first token) is measured when the first streamed chunk with text arrives (a chunk carrying only the
role, or nothing, does not count): that is what a user waits for. With stream=False the TTFT is unknown (None).

Jupyter already runs an asyncio event loop in the kernel's thread, so `asyncio.run` would fail there: `run()` runs
the load in a worker thread with its own event loop and waits for it.
"""
from __future__ import annotations

import asyncio
import json
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import httpx
import numpy as np


@dataclass
class RequestSpec:
    """One request: its JSON body and path (default /v1/completions), plus extra headers (e.g. a priority)."""

    body: dict
    path: str = "/v1/completions"
    headers: dict = field(default_factory=dict)


@dataclass
class Result:
    """What happened to one request. Times in seconds: `start` from the beginning of the load, `ttft` and `latency`
    from the request's own start. `backend`: the x-backend header (who answered, behind a router). `cached_tokens`:
    prompt tokens the server reused from its prefix cache, when it says (llama-server does; None otherwise)."""

    ok: bool
    status: int | None = None
    start: float | None = None
    ttft: float | None = None
    latency: float | None = None
    n_tokens: int = 0
    error: str | None = None
    backend: str | None = None
    cached_tokens: int | None = None
    text: str = ""  # the generated text (choice 0)


DONE = "[DONE]"


def sse_payload(line: str):
    """One line of a server-sent-event stream -> its JSON payload, DONE for `data: [DONE]`, or None (blank lines
    separate events, lines starting with ':' are comments such as keep-alives, other fields are ignored)."""
    if not line.startswith("data:"):
        return None
    data = line[5:].strip()
    return DONE if data == DONE else json.loads(data)


def iter_sse(lines):
    """The JSON payloads of a server-sent-event stream, given its lines; stops at `data: [DONE]`."""
    for line in lines:
        payload = sse_payload(line)
        if payload is DONE:
            return
        if payload is not None:
            yield payload


def chunk_text(chunk: dict) -> str:
    """The new text of one streamed chunk (completions: choices[0].text; chat: choices[0].delta.content)."""
    choices = chunk.get("choices") or [{}]
    c = choices[0]
    return c.get("text") or (c.get("delta") or {}).get("content") or ""


def _cached(payload: dict) -> int | None:
    details = (payload.get("usage") or {}).get("prompt_tokens_details") or {}
    if details.get("cached_tokens") is not None:
        return details["cached_tokens"]
    return (payload.get("timings") or {}).get("cache_n")  # llama-server's own field


async def _one(client: httpx.AsyncClient, spec: RequestSpec, stream: bool, t0: float) -> Result:
    body = dict(spec.body)
    if stream:
        body = {**body, "stream": True, "stream_options": {"include_usage": True}}
    start = time.perf_counter()
    res = Result(ok=False, start=start - t0)
    try:
        if not stream:
            r = await client.post(spec.path, json=body, headers=spec.headers)
            res.status, res.backend = r.status_code, r.headers.get("x-backend")
            res.latency = time.perf_counter() - start
            payload = r.json()
            if r.status_code != 200:
                res.error = (payload.get("error") or {}).get("message", r.text[:200])
                return res
            c = payload["choices"][0]
            res.text = c.get("text") if "text" in c else c["message"]["content"]
            res.n_tokens = payload["usage"]["completion_tokens"]
            res.cached_tokens, res.ok = _cached(payload), True
            return res
        async with client.stream("POST", spec.path, json=body, headers=spec.headers) as r:
            res.status, res.backend = r.status_code, r.headers.get("x-backend")
            if r.status_code != 200:
                text = (await r.aread()).decode(errors="replace")
                try:
                    res.error = json.loads(text)["error"]["message"]
                except (ValueError, KeyError, TypeError):
                    res.error = text[:200]
                res.latency = time.perf_counter() - start
                return res
            pieces, n_chunks, usage_seen = [], 0, False
            async for chunk in _aiter_sse(r.aiter_lines()):
                if "error" in chunk:
                    res.error = chunk["error"].get("message", str(chunk["error"]))
                    break
                text = chunk_text(chunk)
                if text:
                    if res.ttft is None:
                        res.ttft = time.perf_counter() - start
                    pieces.append(text)
                    n_chunks += 1
                if chunk.get("usage"):
                    res.n_tokens, usage_seen = chunk["usage"]["completion_tokens"], True
                    res.cached_tokens = _cached(chunk)
            res.latency = time.perf_counter() - start
            res.text = "".join(pieces)
            if not usage_seen:
                res.n_tokens = n_chunks  # a server without usage in its stream: one chunk per token, about
            res.ok = res.error is None
            return res
    except asyncio.CancelledError:
        res.error = "cancelled at the load's time limit"
        res.latency = time.perf_counter() - start
        return res
    except (httpx.HTTPError, ValueError, KeyError) as e:
        res.error = f"{type(e).__name__}: {e}"
        res.latency = time.perf_counter() - start
        return res


async def _aiter_sse(lines):
    async for line in lines:
        payload = sse_payload(line)
        if payload is DONE:
            return
        if payload is not None:
            yield payload


async def run_load(url: str, specs: list[RequestSpec], *, arrivals: list[float] | None = None,
                   concurrency: int | None = None, max_seconds: float, stream: bool = True) -> list[Result]:
    """Send `specs` to `url` (open loop at `arrivals`, and/or at most `concurrency` in flight); one Result per spec,
    in order. Nothing is sent after `max_seconds`, and whatever still runs then is cancelled."""
    if arrivals is not None and len(arrivals) != len(specs):
        raise ValueError(f"{len(arrivals)} arrival times for {len(specs)} requests")
    gate = asyncio.Semaphore(concurrency) if concurrency else None
    limits = httpx.Limits(max_connections=max(len(specs), 1), max_keepalive_connections=max(len(specs), 1))
    t0 = time.perf_counter()
    deadline = t0 + max_seconds

    async with httpx.AsyncClient(base_url=url, timeout=httpx.Timeout(max_seconds), limits=limits) as client:
        async def send(i: int) -> Result:
            if arrivals is not None:
                await asyncio.sleep(max(0.0, t0 + arrivals[i] - time.perf_counter()))
            if gate is not None:
                await gate.acquire()
            try:
                if time.perf_counter() >= deadline:
                    return Result(ok=False, error="not sent: the load's time limit had passed")
                return await _one(client, specs[i], stream, t0)
            finally:
                if gate is not None:
                    gate.release()

        tasks = [asyncio.create_task(send(i)) for i in range(len(specs))]
        done, pending = await asyncio.wait(tasks, timeout=max_seconds) if tasks else (set(), set())
        for t in pending:
            t.cancel()
        await asyncio.gather(*pending, return_exceptions=True)
    results = []
    for t in tasks:
        r = None if t.cancelled() else t.result()
        results.append(r if r is not None else Result(ok=False, error="not sent: the load's time limit had passed"))
    return results


def run(url: str, specs: list[RequestSpec], **kwargs) -> list[Result]:
    """`run_load` from synchronous code, Jupyter included (its event loop runs in a worker thread)."""
    with ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(asyncio.run, run_load(url, specs, **kwargs)).result()


def poisson_arrivals(n: int, rate: float, seed: int) -> list[float]:
    """n arrival times (s) of a Poisson process with `rate` requests/s, the first at 0: exponential gaps, seeded."""
    gaps = np.random.default_rng(seed).exponential(1.0 / rate, size=n)
    t = np.cumsum(gaps)
    return (t - t[0]).tolist()


def percentile(values, q: float) -> float:
    """The q-th percentile (linear interpolation, numpy's default); NaN for no values. With 20 values, p99 is
    nearly the maximum: report n alongside."""
    values = [v for v in values if v is not None]
    return float(np.percentile(values, q)) if values else float("nan")


def summarize(results: list[Result]) -> dict:
    """n, ok, errors, TTFT / latency / time-per-output-token p50 and p99 (s), tokens, tokens/s and requests/s over the
    wall time (first send to last answer), and the prompt tokens served from a prefix cache (when reported)."""
    ok = [r for r in results if r.ok]
    sent = [r for r in results if r.start is not None]
    wall = (max(r.start + r.latency for r in sent) - min(r.start for r in sent)) if sent else float("nan")
    tokens = sum(r.n_tokens for r in ok)
    tpot = [(r.latency - r.ttft) / (r.n_tokens - 1) for r in ok if r.ttft is not None and r.n_tokens > 1]
    cached = [r.cached_tokens for r in ok if r.cached_tokens is not None]
    return {"n": len(results), "ok": len(ok), "errors": len(results) - len(ok),
            "ttft_p50": percentile([r.ttft for r in ok], 50), "ttft_p99": percentile([r.ttft for r in ok], 99),
            "latency_p50": percentile([r.latency for r in ok], 50),
            "latency_p99": percentile([r.latency for r in ok], 99),
            "tpot_p50": percentile(tpot, 50), "tpot_p99": percentile(tpot, 99),
            "tokens": tokens, "tokens_per_s": tokens / wall if wall > 0 else float("nan"),
            "requests_per_s": len(ok) / wall if wall > 0 else float("nan"), "wall": wall,
            "cached_tokens": sum(cached) if cached else None}


def parse_prometheus(text: str) -> dict[str, float]:
    """A Prometheus text exposition (/metrics of llama-server, vLLM, our server) -> {name{labels}: value}."""
    out = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.rpartition(" ")
            try:
                out[name.strip()] = float(value)
            except ValueError:
                pass
    return out
