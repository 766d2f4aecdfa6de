"""The payload-aware router (helpers/serving/router.py) against small fake OpenAI backends.

A fake backend answers like llama-server: `timings.cache_n` counts the prompt characters / 4 of a system prompt it has
seen before (its "prefix cache"), so prefix affinity is measurable without a model. The slow test at the end runs the
router in front of two real llama-server processes."""
import asyncio
import json
import sys
import textwrap
import threading
import time

import httpx
import pytest
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, StreamingResponse

from helpers.serving import router as rt
from helpers.serving.processes import free_port, serve


def fake_backend(name: str, delay: float = 0.0, chunks: int = 3) -> FastAPI:
    """An OpenAI-ish server with a prefix cache of system prompts; `app.state.mode`: "ok", "500", "break"."""
    app = FastAPI()
    app.state.mode, app.state.seen, app.state.bodies, app.state.delay = "ok", set(), [], delay
    app.state.chunk_delay = 0.01

    @app.get("/health")
    async def health():
        return JSONResponse({"status": "ok"}, status_code=200 if app.state.mode != "down" else 503)

    @app.post("/v1/chat/completions")
    @app.post("/v1/completions")
    async def complete(request: Request):
        body = await request.json()
        app.state.bodies.append(body)
        if app.state.mode == "500":
            return JSONResponse({"error": {"message": "boom"}}, status_code=500)
        system = next((m["content"] for m in body.get("messages", []) if m["role"] == "system"), "")
        prompt_n = sum(len(m["content"]) for m in body.get("messages", [])) // 4 or len(body.get("prompt", "")) // 4
        cache_n = len(system) // 4 if system in app.state.seen else 0
        app.state.seen.add(system)
        timings = {"cache_n": cache_n, "prompt_n": prompt_n - cache_n}
        await asyncio.sleep(app.state.delay)
        if not body.get("stream"):
            return {"choices": [{"text": f"from {name}", "index": 0}], "timings": timings,
                    "usage": {"prompt_tokens": prompt_n, "completion_tokens": 2}}

        async def events():
            for i in range(chunks):
                if app.state.mode == "break" and i == 1:
                    raise RuntimeError("backend died mid-stream")
                yield f"data: {json.dumps({'choices': [{'text': f'{name}{i} ', 'index': 0}]})}\n\n"
                await asyncio.sleep(app.state.chunk_delay)
            yield f"data: {json.dumps({'choices': [], 'timings': timings})}\n\ndata: [DONE]\n\n"

        return StreamingResponse(events(), media_type="text/event-stream")

    return app


@pytest.fixture
def backends():
    """Two fake backends on free ports: (apps, urls)."""
    apps = [fake_backend("a", delay=0.05), fake_backend("b", delay=0.05)]
    with rt.running(apps[0], free_port()) as ua, rt.running(apps[1], free_port()) as ub:
        yield apps, [ua, ub]


def make(urls, policy="payload", **kw):
    return rt.Router([rt.Backend("a", urls[0], tier="high", max_in_flight=kw.pop("max_in_flight", 4)),
                      rt.Backend("b", urls[1], tier="fast", max_in_flight=2)], policy, **kw)


def chat(system, user="hi", **extra):
    return {"messages": [{"role": "system", "content": system}, {"role": "user", "content": user}], "max_tokens": 2,
            **extra}


SYSTEMS = [f"You are the assistant of shop {i}. " * 20 for i in range(4)]


# ------------------------------------------------------------------------------------------------ payload inspection


def test_inspect_reads_prefix_tier_priority_length():
    a = rt.inspect_request("/v1/chat/completions", chat(SYSTEMS[0], "x"), {})
    b = rt.inspect_request("/v1/chat/completions", chat(SYSTEMS[0], "another question"), {"x-tier": "fast"})
    c = rt.inspect_request("/v1/chat/completions", chat(SYSTEMS[1], tier="high", priority="high"), {})
    assert a.prefix_key == b.prefix_key != c.prefix_key
    assert (a.tier, b.tier, c.tier) == (None, "fast", "high")
    assert (a.priority, c.priority) == (1, 2)
    assert rt.inspect_request("/v1/completions", {"prompt": "x" * 400, "priority": 7}, {}).priority == 7
    assert rt.inspect_request("/v1/completions", {"prompt": "x" * 700}, {}).prompt_tokens == 200
    short = rt.inspect_request("/v1/completions", {"prompt": "hello"}, {})
    assert short.prefix_key is None  # nothing worth sharing
    with pytest.raises(ValueError, match="priority"):
        rt.inspect_request("/v1/completions", {"prompt": "x", "priority": "urgent"}, {})


def test_cache_counts_reads_llama_server_and_openai_fields():
    assert rt.cache_counts({"timings": {"cache_n": 279, "prompt_n": 8}}) == (279, 287)
    assert rt.cache_counts({"usage": {"prompt_tokens": 50, "prompt_tokens_details": {"cached_tokens": 32}}}) == (32, 50)
    assert rt.cache_counts({"usage": {"prompt_tokens": 50}}) == (0, 50)
    assert rt.cache_counts({"choices": []}) is None


# ------------------------------------------------------------------------------------------------ policies


def _backends():
    return [rt.Backend("q8", "http://x", tier="high", max_prompt_tokens=2000),
            rt.Backend("q4", "http://y", tier="fast", max_prompt_tokens=500)]


def _req(key=None, tokens=100, tier=None, priority=1):
    return rt.RequestInfo("/v1/chat/completions", key, tokens, tier, priority, False)


def test_round_robin_cycles_over_healthy_backends():
    bs, state = _backends(), {}
    assert [rt.round_robin(_req("k"), bs, state)[0].name for _ in range(4)] == ["q8", "q4", "q8", "q4"]
    bs[0].healthy = False
    assert [b.name for b in rt.round_robin(_req(), bs, state)] == ["q4"]


def test_payload_aware_prefix_affinity_is_sticky_and_balanced():
    bs, state = _backends(), {}
    firsts = {k: rt.payload_aware(_req(k), bs, state)[0].name for k in "abcd"}
    assert sorted(firsts.values()) == ["q4", "q4", "q8", "q8"]  # 4 prefixes, 2 backends: 2 each
    for _ in range(3):
        for k in "abcd":
            order = rt.payload_aware(_req(k), bs, state)
            assert order[0].name == firsts[k] and {b.name for b in order} == {"q8", "q4"}  # the rest: failover


def test_payload_aware_tier_length_and_health():
    bs, state = _backends(), {}
    assert rt.payload_aware(_req("k", tier="high"), bs, state)[0].name == "q8"
    assert rt.payload_aware(_req("k2", tier="fast"), bs, state)[0].name == "q4"
    assert [b.name for b in rt.payload_aware(_req("k3", tokens=1200, tier="fast"), bs, state)] == ["q8"]  # too long
    assert rt.payload_aware(_req("k", tokens=3000), bs, state) == []
    bs[0].healthy = False  # the owner of "k" dies: "k" moves, and stays moved
    assert [b.name for b in rt.payload_aware(_req("k", tier="high"), bs, state)] == ["q4"]
    assert state["owner"]["k"] == "q4"


# ------------------------------------------------------------------------------------------------ over HTTP


def post(url, body, **kw):
    return httpx.post(url + "/v1/chat/completions", json=body, timeout=10, **kw)


def test_routes_non_streaming_and_streaming_with_headers_and_stats(backends):
    apps, urls = backends
    with rt.running(rt.make_app(make(urls)), free_port()) as url:
        r = post(url, chat(SYSTEMS[0], tier="fast", priority="high"))
        assert r.status_code == 200 and r.headers["x-backend"] == "b" and r.json()["choices"][0]["text"] == "from b"
        assert "tier" not in apps[1].state.bodies[-1] and "priority" not in apps[1].state.bodies[-1]  # consumed
        with httpx.stream("POST", url + "/v1/chat/completions", json=chat(SYSTEMS[0], stream=True, tier="fast"),
                          timeout=10) as s:
            assert s.headers["content-type"].startswith("text/event-stream") and s.headers["x-backend"] == "b"
            text = "".join(s.iter_text())
        assert text.count("data: ") == 5 and "b0 " in text and text.endswith("data: [DONE]\n\n")
        stats = httpx.get(url + "/stats").json()
        assert stats["requests"] == 2 and stats["backends"]["b"]["answered"] == 2
        assert stats["backends"]["b"]["cached_tokens"] == len(SYSTEMS[0]) // 4  # the second request hit
        assert httpx.get(url + "/health").status_code == 200
        assert "router_queue_length 0" in httpx.get(url + "/metrics").text


def test_bad_requests_get_4xx_and_the_router_keeps_serving(backends):
    apps, urls = backends
    router = make(urls)
    router.backends[0].max_prompt_tokens = router.backends[1].max_prompt_tokens = 100
    with rt.running(rt.make_app(router), free_port()) as url:
        r = httpx.post(url + "/v1/completions", content=b"{not json", timeout=5)
        assert r.status_code == 400 and "JSON" in r.json()["error"]["message"]
        r = httpx.post(url + "/v1/completions", json={"prompt": "x" * 2000}, timeout=5)
        assert r.status_code == 413 and "longer than any healthy backend" in r.json()["error"]["message"]
        assert post(url, chat("s", priority="urgent")).status_code == 400
        assert post(url, chat("s")).status_code == 200


def test_prefix_affinity_hits_the_cache_more_than_round_robin(backends):
    apps, urls = backends
    hit = {}
    for policy in ("round_robin", "payload"):
        for app in apps:
            app.state.seen.clear()
        with rt.running(rt.make_app(make(urls, policy)), free_port()) as url, httpx.Client(timeout=10) as c:
            for i, k in enumerate([0, 0, 1, 1, 2, 2, 3, 3] * 2):  # each prompt twice in a row, as users come
                assert c.post(url + "/v1/chat/completions", json=chat(SYSTEMS[k], f"q{i}")).status_code == 200
            hit[policy] = c.get(url + "/stats").json()["cache_hit_rate"]
    # 16 requests, 4 system prompts: affinity computes each prompt once (12 of 16 hit); round-robin alternates, so
    # each prompt meets each of the 2 backends: 8 misses. Hit rates of the prompt tokens ~ 12/16 vs 8/16.
    assert hit["payload"] > hit["round_robin"] + 0.15, hit


def test_failover_on_5xx_and_on_a_dead_backend(backends):
    apps, urls = backends
    router = make(urls, "round_robin", health_interval=0.2)
    with rt.running(rt.make_app(router), free_port()) as url:
        apps[0].state.mode = "500"
        for _ in range(2):  # whoever round-robin picks first, the answer comes from b
            r = post(url, chat("s"))
            assert r.status_code == 200 and r.headers["x-backend"] == "b"
        assert router.counts["retries"] >= 1 and router.backends[0].failures >= 1
        apps[0].state.mode = apps[1].state.mode = "500"
        r = post(url, chat("s"))
        assert r.status_code == 503 and "all 2 backends failed" in r.json()["error"]["message"]
        apps[0].state.mode, apps[1].state.mode = "down", "ok"
        time.sleep(0.5)  # a health check marks a down
        assert not router.backends[0].healthy
        assert all(post(url, chat("s")).headers["x-backend"] == "b" for _ in range(3))
        apps[0].state.mode = "ok"
        time.sleep(0.5)
        assert router.backends[0].healthy  # back in rotation


def test_a_stream_broken_after_its_first_chunk_ends_with_an_error_event(backends):
    apps, urls = backends
    with rt.running(rt.make_app(make(urls)), free_port()) as url:
        apps[0].state.mode = "break"
        with httpx.stream("POST", url + "/v1/chat/completions", json=chat("s", stream=True, tier="high"),
                          timeout=10) as s:
            text = "".join(s.iter_text())
        assert "a0 " in text and "failed mid-stream" in text and "[DONE]" not in text


def test_a_client_that_hangs_up_mid_stream_frees_its_slot(backends):
    apps, urls = backends
    apps[0].state.delay, apps[0].state.chunk_delay = 0.0, 1.0  # a slow stream
    router = make(urls)
    with rt.running(rt.make_app(router), free_port()) as url:
        body = chat("s", stream=True, tier="high", max_tokens=50)
        apps[0].state.mode = "ok"
        with httpx.stream("POST", url + "/v1/chat/completions", json=body, timeout=10) as s:
            chunks = s.iter_raw()  # kept: a discarded iterator closes the response, and with it the connection
            next(chunks)  # read one chunk, then hang up (the backend's next chunk is 1 s away)
            assert s.headers["x-backend"] == "a" and router.backends[0].in_flight == 1
        # the with-block closed the connection: the client hung up mid-stream
        deadline = time.monotonic() + 0.8  # before the backend's next chunk: the hang-up itself frees the slot
        while router.backends[0].in_flight and time.monotonic() < deadline:
            time.sleep(0.05)
        assert router.backends[0].in_flight == 0 and post(url, chat("s", tier="high")).status_code == 200


def test_high_priority_requests_leave_the_queue_first(backends):
    apps, urls = backends
    apps[0].state.delay = 0.1
    router = make(urls, max_in_flight=1)
    router.backends = router.backends[:1]  # one backend, one slot: everything else queues
    with rt.running(rt.make_app(router), free_port()) as url:
        async def load():
            async with httpx.AsyncClient(timeout=10) as c:
                async def one(i, priority):
                    await asyncio.sleep(0.01 * i)  # arrive in this order while the first one holds the slot
                    return (await c.post(url + "/v1/chat/completions", json=chat("s", priority=priority))).status_code
                return await asyncio.gather(*(one(i, p) for i, p in enumerate(["low"] * 5 + ["high"] * 3)))

        assert asyncio.run(load()) == [200] * 8
    log = list(router.log)  # (seq, priority, backend, queued_at, dispatched_at)
    lows, highs = [e for e in log if e[1] == 0], [e for e in log if e[1] == 2]
    inversions = [(lo[0], hi[0]) for lo in lows for hi in highs if lo[2] == hi[2] and hi[3] < lo[4] < hi[4]]
    overtakes = [(lo[0], hi[0]) for lo in lows for hi in highs if lo[2] == hi[2] and lo[3] < hi[3] and hi[4] < lo[4]]
    assert inversions == [], log  # no low one left the queue while a high one waited
    assert len(overtakes) >= 3, log  # and the high ones did overtake lows that queued before them


def test_failover_when_a_backend_process_is_killed(tmp_path):
    """A real process (a fake backend under uvicorn) killed by pid mid-load: every request is answered."""
    script = tmp_path / "fake.py"
    script.write_text(textwrap.dedent(f"""
        import sys; sys.path.insert(0, {str(tmp_path.parent)!r})
        import uvicorn
        sys.path.insert(0, {str(__import__('pathlib').Path(__file__).parent)!r})
        from test_router import fake_backend
        uvicorn.run(fake_backend(sys.argv[2], delay=0.1), host="127.0.0.1", port=int(sys.argv[1]), log_level="warning")
    """))
    pa, pb = free_port(), free_port()
    with serve([sys.executable, script, pa, "a"], port=pa, name="fake-a") as a, \
            serve([sys.executable, script, pb, "b"], port=pb, name="fake-b"):
        router = make([f"http://127.0.0.1:{pa}", f"http://127.0.0.1:{pb}"], "round_robin", health_interval=0.2)
        with rt.running(rt.make_app(router), free_port()) as url:
            async def load():
                async with httpx.AsyncClient(timeout=10) as c:
                    async def one(i):
                        await asyncio.sleep(0.02 * i)
                        body = chat(SYSTEMS[i % 4], stream=bool(i % 2))
                        r = await c.post(url + "/v1/chat/completions", json=body)
                        return r.status_code, r.headers.get("x-backend"), r.text

                    async def killer():
                        await asyncio.sleep(0.15)
                        a.kill()

                    return (await asyncio.gather(*(one(i) for i in range(20)), killer()))[:-1]

            results = asyncio.run(load())
    assert len(results) == 20
    for status, backend, text in results:  # answered (by a before the kill, by b after), or a stream cut mid-way
        assert status == 200 and backend in ("a", "b"), (status, backend, text)  # ... that ends in an error event
        assert '"choices"' in text and ("[DONE]" in text or "failed mid-stream" in text or '"text"' in text), text
    assert router.counts["retries"] >= 1 and not router.backends[0].healthy
    assert sum(s == 200 and b == "b" for s, b, _ in results) >= 10


def test_parse_backend_and_cli_args():
    b = rt.parse_backend("q8=http://127.0.0.1:8081/,high,1800", max_in_flight=2)
    assert (b.name, b.url, b.tier, b.max_prompt_tokens, b.max_in_flight) == ("q8", "http://127.0.0.1:8081", "high",
                                                                             1800, 2)
    with pytest.raises(ValueError):
        rt.parse_backend("q8:8081")
    with pytest.raises(ValueError, match="distinct"):
        rt.Router([b, b])


@pytest.mark.slow
def test_real_llama_servers_prefix_affinity_and_streaming():
    """Two llama-server processes (SmolLM2 Q8_0 and Q4_K_M): the router's cache counts equal the servers' own, and
    prefix affinity computes each system prompt once where round-robin computes it on both backends."""
    from helpers.serving import loadgen
    from helpers.serving.processes import llama_server, serving_gguf

    order = [0, 0, 1, 1, 2, 2, 3, 3] * 2
    hit = {}
    for policy in ("round_robin", "payload"):
        with llama_server(serving_gguf("Q8_0"), parallel=2, ctx_size=2048, threads=1) as q8, \
                llama_server(serving_gguf("Q4_K_M"), parallel=2, ctx_size=2048, threads=1) as q4:
            router = rt.Router([rt.Backend("q8_0", q8.url, "high", max_in_flight=2),
                                rt.Backend("q4_k_m", q4.url, "fast", max_in_flight=2)], policy)
            with rt.running(rt.make_app(router), free_port()) as url:
                specs = [loadgen.RequestSpec(chat(SYSTEMS[k], f"question {i}", temperature=0),
                                             path="/v1/chat/completions") for i, k in enumerate(order)]
                results = loadgen.run(url, specs, concurrency=1, max_seconds=120, stream=True)
                stats = httpx.get(url + "/stats").json()
            server = [loadgen.parse_prometheus(httpx.get(s.url + "/metrics").text) for s in (q8, q4)]
        assert all(r.ok and r.backend in ("q8_0", "q4_k_m") and r.ttft is not None for r in results)
        cached = sum(m["llamacpp:prompt_tokens_cached_total"] for m in server)
        assert stats["backends"]["q8_0"]["cached_tokens"] + stats["backends"]["q4_k_m"]["cached_tokens"] == cached
        assert sum(r.cached_tokens for r in results) == cached  # what the client saw, too
        hit[policy] = stats["cache_hit_rate"]
    assert hit["payload"] > hit["round_robin"] + 0.15, hit


@pytest.mark.slow
def test_locust_headless_against_the_router(backends, tmp_path):
    """deploy/locustfile.py, run as a separate process (bounded: 4 users, 5 s): every request answered."""
    import csv
    import subprocess
    from pathlib import Path

    apps, urls = backends
    root = Path(__file__).resolve().parent.parent
    locust = Path(sys.executable).parent / "locust"
    if not locust.exists():
        pytest.skip("locust is not installed")
    with rt.running(rt.make_app(make(urls)), free_port()) as url:
        out = subprocess.run([locust, "-f", root / "deploy" / "locustfile.py", "--headless", "--users", "4",
                              "--spawn-rate", "4", "--run-time", "5s", "--host", url, "--csv", tmp_path / "run",
                              "--only-summary"], capture_output=True, text=True, timeout=60, cwd=tmp_path)
        stats = httpx.get(url + "/stats").json()
    assert out.returncode == 0, out.stderr[-2000:]
    rows = {r["Name"]: r for r in csv.DictReader(open(tmp_path / "run_stats.csv"))}
    n, failures = int(rows["chat"]["Request Count"]), int(rows["chat"]["Failure Count"])
    assert n >= 10 and failures == 0, rows["chat"]
    # locust leaves requests cut at its time limit out of its counts; both tiers were used
    assert stats["requests"] >= n and {b["answered"] > 0 for b in stats["backends"].values()} == {True}
