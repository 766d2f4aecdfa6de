"""A payload-aware HTTP router in front of several OpenAI-compatible backends (llama-server, our engine).

The top layer of the inference stack decides, per request, WHICH engine answers and WHEN. A round-robin load balancer
looks at nothing but a counter. A payload-aware router reads the request first (it is JSON, and cheap to parse next to
a forward pass) and routes on what it carries:

- shared prefix: requests with the same system prompt go to the backend that already holds its KV cache
  (prefix affinity), so that backend skips the prefill of the shared part. Round-robin spreads every system prompt
  over every backend, and each one has to compute it again;
- prompt length: a backend only gets prompts that fit its context (`max_prompt_tokens`);
- quality tier: `"tier": "high"` prefers the backends of that tier (e.g. Q8_0), `"fast"` others (e.g. Q4_K_M);
- priority: when every slot of a backend is busy, requests wait in the router, in a queue per backend; a higher
  `"priority"` leaves it first.

The router is a policy (a function: request info + backends -> the backends in order of preference) plus the
machinery every policy shares: admission (at most `max_in_flight` requests per backend, a priority queue for the rest),
health checks (GET /health every `health_interval` s), failover (a connection error or a 5xx moves the request to the
next backend in the policy's order; when none is left, a clear 503), streaming pass-through of server-sent events,
and counters (GET /stats). The answer's `x-backend` header names the backend that produced it.

    python -m helpers.serving.router --port 8000 --policy payload \
        --backend q8=http://127.0.0.1:8081,high --backend q4=http://127.0.0.1:8082,fast
"""
from __future__ import annotations

import argparse
import asyncio
import hashlib
import heapq
import itertools
import json
import threading
import time
from collections import deque
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass, field
from typing import Callable, Iterator

import httpx
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse
from starlette.background import BackgroundTask

ROUTER_FIELDS = ("tier", "priority")  # request fields the router consumes; the backend never sees them
PRIORITIES = {"low": 0, "normal": 1, "high": 2}
CHARS_PER_TOKEN = 3.5  # SmolLM2's tokenizer: 3.5-4.5 characters a token in English; the low end rarely underestimates


@dataclass
class Backend:
    """One OpenAI-compatible server, and what the router knows about it right now."""

    name: str
    url: str
    tier: str = "standard"
    max_prompt_tokens: int | None = None  # None: any prompt fits
    max_in_flight: int | None = 4  # requests sent at once (llama-server: its --parallel slots); None: no limit
    healthy: bool = True
    in_flight: int = 0
    waiting: list = field(default_factory=list, repr=False)  # heap of (-priority, seq, future)
    answered: int = 0  # requests this backend answered (any status < 500)
    failures: int = 0  # connection errors, time-outs, 5xx, broken streams
    downs: int = 0  # times it was taken out of routing
    missed_checks: int = 0  # consecutive health checks that timed out
    prompt_tokens: int = 0  # what the backend reported: prompt tokens in all, and how many came from its cache
    cached_tokens: int = 0

    @property
    def load(self) -> int:
        return self.in_flight + len(self.waiting)


@dataclass
class RequestInfo:
    """What the router reads from a request before routing it (payload inspection)."""

    path: str
    prefix_key: str | None  # a hash of the shared prefix: the system prompt (chat) or the prompt's first characters
    prompt_tokens: int  # estimated: characters / CHARS_PER_TOKEN (no tokenizer in the router)
    tier: str | None
    priority: int
    stream: bool


def inspect_request(path: str, body: dict, headers, prefix_chars: int = 256) -> RequestInfo:
    """Read the routing features out of an OpenAI request body (and the x-tier / x-priority headers)."""
    if "messages" in body:  # chat: the system message is the prefix many requests share
        messages = body["messages"] if isinstance(body["messages"], list) else []
        text = "".join(str(m.get("content", "")) for m in messages if isinstance(m, dict))
        system = next((str(m.get("content")) for m in messages if isinstance(m, dict) and m.get("role") == "system"),
                      None)
    else:  # completion: the prompt's first characters stand in for its prefix (a real router matches tokens)
        text = body.get("prompt", "")
        text = text if isinstance(text, str) else json.dumps(text)
        system = text[:prefix_chars] if len(text) >= prefix_chars else None
    prefix_key = hashlib.sha1(system.encode()).hexdigest()[:16] if system else None
    tier = body.get("tier") or headers.get("x-tier")
    priority = body.get("priority", headers.get("x-priority", "normal"))
    priority = PRIORITIES.get(priority, None) if isinstance(priority, str) and not priority.lstrip("-").isdigit() \
        else int(priority)
    if priority is None:
        raise ValueError(f"priority must be an integer or one of {list(PRIORITIES)}")
    return RequestInfo(path=path, prefix_key=prefix_key, prompt_tokens=int(len(text) / CHARS_PER_TOKEN), tier=tier,
                       priority=priority, stream=bool(body.get("stream", False)))


# ------------------------------------------------------------------------------------------------
# Policies: (request, backends, state) -> the healthy backends that may take it, in order of preference.
# The router sends the request to the first and fails over along the rest; `state` is the policy's own dict.


def round_robin(req: RequestInfo, backends: list[Backend], state: dict) -> list[Backend]:
    """The baseline: the next backend in turn, whatever the request carries."""
    up = [b for b in backends if b.healthy]
    if not up:
        return []
    i = state.get("next", 0) % len(up)
    state["next"] = i + 1
    return up[i:] + up[:i]


def payload_aware(req: RequestInfo, backends: list[Backend], state: dict) -> list[Backend]:
    """Length decides who MAY answer, tier who SHOULD, the shared prefix who answers first.

    A new prefix goes to the preferred backend that owns the fewest prefixes (then the least busy), and stays there
    (`state["owner"]`: prefix -> backend name) as long as that backend is healthy: its KV cache holds the prefix.
    Trade-off: a very popular prefix loads one backend more than the others (remedy: a bound on the imbalance)."""
    fits = [b for b in backends
            if b.healthy and (b.max_prompt_tokens is None or req.prompt_tokens <= b.max_prompt_tokens)]
    preferred = [b for b in fits if b.tier == req.tier] or fits  # an unknown or unavailable tier: any backend
    rest = sorted((b for b in fits if b not in preferred), key=lambda b: b.load)
    order = sorted(preferred, key=lambda b: b.load)  # no prefix: least busy first
    if req.prefix_key is not None and preferred:
        owner = state.setdefault("owner", {})
        first = next((b for b in preferred if b.name == owner.get(req.prefix_key)), None)
        if first is None:  # a new prefix, or its backend is gone: pick one and remember it
            owned = lambda b: sum(name == b.name for name in owner.values())
            first = min(preferred, key=lambda b: (owned(b), b.load))
            owner[req.prefix_key] = first.name
        order = [first] + [b for b in order if b is not first]
    return order + rest


POLICIES: dict[str, Callable] = {"round_robin": round_robin, "payload": payload_aware}


# ------------------------------------------------------------------------------------------------
# The router: admission with priorities, forwarding with failover, health checks, counters


class BackendDown(Exception):
    """The backend a request waited for was marked unhealthy: try the next one."""


def _error(status: int, message: str, kind: str) -> JSONResponse:
    return JSONResponse({"error": {"message": message, "type": kind}}, status_code=status)


def cache_counts(obj: dict) -> tuple[int, int] | None:
    """(cached prompt tokens, prompt tokens) from a response or a final stream chunk, or None if it reports neither.

    llama-server's `timings` has cache_n (reused from the KV cache) and prompt_n (computed now); the OpenAI field is
    usage.prompt_tokens_details.cached_tokens out of usage.prompt_tokens."""
    t = obj.get("timings")
    if isinstance(t, dict) and "cache_n" in t and "prompt_n" in t:
        return int(t["cache_n"]), int(t["cache_n"]) + int(t["prompt_n"])
    u = obj.get("usage")
    if isinstance(u, dict) and "prompt_tokens" in u:
        return int((u.get("prompt_tokens_details") or {}).get("cached_tokens") or 0), int(u["prompt_tokens"])
    return None


class Router:
    """Routes OpenAI requests over `backends` with `policy` ("payload", "round_robin" or a function)."""

    def __init__(self, backends: list[Backend], policy: str | Callable = "payload", *, health_interval: float = 1.0,
                 timeout: float = 120.0):
        if len({b.name for b in backends}) != len(backends) or not backends:
            raise ValueError("the router needs at least one backend, with distinct names")
        self.backends = backends
        self.policy = POLICIES[policy] if isinstance(policy, str) else policy
        self.policy_name = policy if isinstance(policy, str) else getattr(policy, "__name__", "custom")
        self.state: dict = {}
        self.health_interval, self.timeout = health_interval, timeout
        self.client: httpx.AsyncClient | None = None
        self._health_task: asyncio.Task | None = None
        self._seq = itertools.count()
        self.counts = {"requests": 0, "retries": 0, "errors": 0, "broken_streams": 0}
        self.log: deque = deque(maxlen=10_000)  # (seq, priority, backend, queued_at, dispatched_at): who went when

    # -- life cycle: an httpx client and a health-check task on the server's event loop
    async def start(self) -> None:
        if self.client is None:
            limits = httpx.Limits(max_connections=256, max_keepalive_connections=64)
            self.client = httpx.AsyncClient(timeout=httpx.Timeout(self.timeout, connect=2.0), limits=limits)
            self._health_task = asyncio.create_task(self._health_loop())

    async def close(self) -> None:
        if self._health_task is not None:
            self._health_task.cancel()
        if self.client is not None:
            await self.client.aclose()
        self.client = self._health_task = None

    async def _health_loop(self) -> None:
        while True:
            await asyncio.gather(*(self.check_health(b) for b in self.backends))
            await asyncio.sleep(self.health_interval)

    async def check_health(self, b: Backend, timeout: float = 3.0, patience: int = 2) -> bool:
        """GET /health: 200 -> healthy. Refused or not 200 -> down now; a time-out -> down after `patience` in a row
        (a busy machine can be slow to answer once; a backend that never answers is gone)."""
        try:
            ok = (await self.client.get(f"{b.url}/health", timeout=timeout)).status_code == 200
            b.missed_checks = 0
        except httpx.TimeoutException:
            b.missed_checks += 1
            ok = b.healthy and b.missed_checks < patience
        except httpx.HTTPError:
            ok = False
        if not ok:
            self.mark_down(b)
        b.healthy = ok
        return ok

    def mark_down(self, b: Backend) -> None:
        """Take `b` out of routing; every request queued for it moves on to its next backend."""
        b.downs += b.healthy
        b.healthy = False
        for _, _, fut in b.waiting:
            if not fut.done():
                fut.set_exception(BackendDown(b.name))
        b.waiting.clear()

    # -- admission: at most max_in_flight per backend; the others wait, highest priority first (FIFO within one)
    async def acquire(self, b: Backend, priority: int, seq: int) -> None:
        queued_at = time.perf_counter()
        if not b.healthy:
            raise BackendDown(b.name)
        if b.max_in_flight is None or (b.in_flight < b.max_in_flight and not b.waiting):
            b.in_flight += 1
        else:
            fut = asyncio.get_running_loop().create_future()
            heapq.heappush(b.waiting, (-priority, seq, fut))
            try:
                await fut
            except asyncio.CancelledError:  # the client went away while waiting
                if fut.done() and not fut.cancelled() and fut.exception() is None:
                    self.release(b)  # it had been granted a slot: give it back
                raise
        self.log.append((seq, priority, b.name, queued_at, time.perf_counter()))

    def release(self, b: Backend) -> None:
        b.in_flight -= 1
        while b.waiting:
            _, _, fut = heapq.heappop(b.waiting)
            if not fut.done():
                b.in_flight += 1
                fut.set_result(None)
                break

    # -- forwarding
    async def handle(self, path: str, body: dict, headers) -> Response:
        """Route one request: the policy's order, failing over along it; a clear error when no backend is left."""
        await self.start()
        try:
            req = inspect_request(path, body, headers)
        except (ValueError, TypeError) as e:
            return _error(400, str(e), "invalid_request_error")
        forward = {k: v for k, v in body.items() if k not in ROUTER_FIELDS}
        seq = next(self._seq)
        self.counts["requests"] += 1
        order = self.policy(req, self.backends, self.state)
        if not order:
            self.counts["errors"] += 1
            if any(b.healthy for b in self.backends):
                limit = max(b.max_prompt_tokens or 0 for b in self.backends if b.healthy)
                return _error(413, f"prompt of ~{req.prompt_tokens} tokens is longer than any healthy backend "
                                   f"accepts ({limit} tokens)", "invalid_request_error")
            return _error(503, "no healthy backend", "unavailable")
        failed = []
        for attempt, b in enumerate(order):
            if attempt:
                self.counts["retries"] += 1
            try:
                await self.acquire(b, req.priority, seq)
            except BackendDown:
                failed.append(f"{b.name}: down")
                continue
            headers_out = {"x-backend": b.name, "x-router-attempts": str(attempt + 1)}
            try:
                if req.stream:
                    return await self._stream(b, path, forward, headers_out)
                return await self._once(b, path, forward, headers_out)
            except (httpx.HTTPError, _BadStatus) as e:
                b.failures += 1
                if not isinstance(e, _BadStatus):
                    self.mark_down(b)  # a connection error: out until a health check says otherwise
                failed.append(f"{b.name}: {type(e).__name__} {e}".strip())
                self.release(b)
        self.counts["errors"] += 1
        return _error(503, f"all {len(order)} backends failed: " + "; ".join(failed), "unavailable")

    async def _once(self, b: Backend, path: str, body: dict, headers_out: dict) -> Response:
        r = await self.client.post(b.url + path, json=body)
        if r.status_code >= 500:
            raise _BadStatus(f"HTTP {r.status_code}")
        self.release(b)
        b.answered += 1
        try:
            self._count_cache(b, r.json())
        except ValueError:
            pass
        return Response(r.content, status_code=r.status_code, headers=headers_out,
                        media_type=r.headers.get("content-type", "application/json"))

    async def _stream(self, b: Backend, path: str, body: dict, headers_out: dict) -> Response:
        """Server-sent events passed through chunk by chunk. The first chunk is read before answering: until then a
        failure can still move to another backend; after it, a failure ends the stream with an error event."""
        r = await self.client.send(self.client.build_request("POST", b.url + path, json=body), stream=True)
        try:
            if r.status_code >= 500:
                raise _BadStatus(f"HTTP {r.status_code}")
            if r.status_code != 200:  # a client error: pass it on, nobody else would answer differently
                content = await r.aread()
                self.release(b)
                b.answered += 1
                return Response(content, status_code=r.status_code, headers=headers_out,
                                media_type=r.headers.get("content-type"))
            chunks = r.aiter_raw()
            first = await anext(chunks, b"")
        except BaseException:
            await r.aclose()
            raise
        b.answered += 1  # the stream has started: this backend answers (a later break is counted apart)
        done = []

        async def cleanup():  # exactly once: the generator's end, or the response's background task
            if not done:
                done.append(True)
                await r.aclose()
                self.release(b)

        async def relay():
            tail, counted = b"", False
            try:
                chunk = first
                while chunk:
                    yield chunk
                    lines = (tail + chunk).split(b"\n")
                    tail = lines.pop()
                    for line in lines:
                        if not counted and line.startswith(b"data: {") and (b'"timings"' in line or b'"usage"' in line):
                            counted = self._count_cache(b, json.loads(line[6:]))  # once a request
                    chunk = await anext(chunks, b"")
            except httpx.HTTPError as e:
                b.failures += 1
                self.counts["broken_streams"] += 1
                self.mark_down(b)
                err = {"error": {"message": f"backend {b.name} failed mid-stream ({type(e).__name__}); the answer is "
                                            f"incomplete, retry the request", "type": "backend_failed"}}
                yield f"data: {json.dumps(err)}\n\n".encode()
            finally:
                await cleanup()

        return StreamingResponse(relay(), headers=headers_out, media_type="text/event-stream",
                                 background=BackgroundTask(cleanup))

    def _count_cache(self, b: Backend, obj: dict) -> bool:
        counts = cache_counts(obj) if isinstance(obj, dict) else None
        if counts is not None:
            b.cached_tokens += counts[0]
            b.prompt_tokens += counts[1]
        return counts is not None

    def stats(self) -> dict:
        per = {b.name: {"url": b.url, "tier": b.tier, "healthy": b.healthy, "in_flight": b.in_flight,
                        "waiting": len(b.waiting), "answered": b.answered, "failures": b.failures, "downs": b.downs,
                        "prompt_tokens": b.prompt_tokens, "cached_tokens": b.cached_tokens}
               for b in self.backends}
        prompt = sum(b.prompt_tokens for b in self.backends)
        return {"policy": self.policy_name, **self.counts, "queued": sum(len(b.waiting) for b in self.backends),
                "cache_hit_rate": sum(b.cached_tokens for b in self.backends) / prompt if prompt else 0.0,
                "backends": per}


class _BadStatus(Exception):
    """A backend answered 5xx: count it as a failure and try the next one."""


# ------------------------------------------------------------------------------------------------
# HTTP


def make_app(router: Router) -> FastAPI:
    """The router as an ASGI app: the two OpenAI endpoints, /health, /stats, /metrics (Prometheus), /v1/models."""

    @asynccontextmanager
    async def lifespan(app):
        await router.start()
        yield
        await router.close()

    app = FastAPI(title="payload-aware router", lifespan=lifespan)

    async def forward(path: str, request: Request) -> Response:
        try:
            body = await request.json()
        except ValueError:
            return _error(400, "request body is not valid JSON", "invalid_request_error")
        if not isinstance(body, dict):
            return _error(400, "request body must be a JSON object", "invalid_request_error")
        return await router.handle(path, body, request.headers)

    @app.post("/v1/completions")
    async def completions(request: Request):
        return await forward("/v1/completions", request)

    @app.post("/v1/chat/completions")
    async def chat(request: Request):
        return await forward("/v1/chat/completions", request)

    @app.get("/health")
    async def health():
        await router.start()
        up = [b.name for b in router.backends if b.healthy]
        return JSONResponse({"status": "ok" if up else "no healthy backend", "healthy": up},
                            status_code=200 if up else 503)

    @app.get("/stats")
    async def stats():
        return router.stats()

    @app.get("/v1/models")
    async def models():
        return {"object": "list", "data": [{"id": b.name, "object": "model", "tier": b.tier} for b in router.backends]}

    @app.get("/metrics")
    async def metrics():  # what a HorizontalPodAutoscaler can scale on (through a Prometheus adapter)
        s = router.stats()
        lines = ["# TYPE router_queue_length gauge", f"router_queue_length {s['queued']}",
                 "# TYPE router_in_flight gauge", f"router_in_flight {sum(b.in_flight for b in router.backends)}",
                 "# TYPE router_requests_total counter", f"router_requests_total {s['requests']}",
                 "# TYPE router_retries_total counter", f"router_retries_total {s['retries']}"]
        return Response("\n".join(lines) + "\n", media_type="text/plain; version=0.0.4")

    return app


@contextmanager
def running(app, port: int, timeout: float = 20.0) -> Iterator[str]:
    """Serve `app` with uvicorn on 127.0.0.1:`port` in a background thread of THIS process; yields its url.

    In-process so that a notebook can route with a policy it just defined; stopped in a `finally`."""
    import uvicorn

    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="on"))
    thread = threading.Thread(target=server.run, name=f"router-{port}", daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + timeout
        while not server.started:
            if not thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError(f"router did not start on 127.0.0.1:{port}")
            time.sleep(0.02)
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout)


def parse_backend(spec: str, max_in_flight: int | None = 4) -> Backend:
    """"name=url[,tier[,max_prompt_tokens]]" -> Backend."""
    name, _, rest = spec.partition("=")
    url, *more = rest.split(",")
    if not name or not url.startswith("http"):
        raise ValueError(f"--backend {spec!r}: expected name=http://host:port[,tier[,max_prompt_tokens]]")
    return Backend(name, url.rstrip("/"), tier=more[0] if more else "standard",
                   max_prompt_tokens=int(more[1]) if len(more) > 1 else None, max_in_flight=max_in_flight)


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description="payload-aware router for OpenAI-compatible backends")
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=8000)
    ap.add_argument("--policy", choices=sorted(POLICIES), default="payload")
    ap.add_argument("--backend", action="append", required=True, help="name=url[,tier[,max_prompt_tokens]]")
    ap.add_argument("--max-in-flight", type=int, default=4, help="requests sent to one backend at once")
    ap.add_argument("--health-interval", type=float, default=1.0)
    args = ap.parse_args(argv)
    import uvicorn

    router = Router([parse_backend(s, args.max_in_flight) for s in args.backend], args.policy,
                    health_interval=args.health_interval)
    uvicorn.run(make_app(router), host=args.host, port=args.port, log_level="warning")


if __name__ == "__main__":
    main()
