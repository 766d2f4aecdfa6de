"""helpers.serving.loadgen: bounded in requests and seconds, TTFT from the first streamed token, usable from a
running event loop (Jupyter), exact summary arithmetic; against a scripted fake OpenAI server in a thread."""
import asyncio
import json
import threading
import time

import numpy as np
import pytest
import uvicorn
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, StreamingResponse

from helpers.serving import loadgen as L
from helpers.serving.processes import free_port

FIRST_S, PER_TOKEN_S = 0.15, 0.01  # the fake server: first token after 150 ms, then one every 10 ms


def fake_openai_app():
    app = FastAPI()

    @app.post("/v1/completions")
    async def completions(request: Request):
        body = await request.json()
        n = body.get("max_tokens", 4)
        if n < 1:
            return JSONResponse({"error": {"message": "max_tokens must be >= 1", "type": "invalid"}}, 400)
        delay = body.get("delay", FIRST_S)
        if not body.get("stream"):
            await asyncio.sleep(delay + PER_TOKEN_S * (n - 1))
            return JSONResponse({"choices": [{"text": "x" * n}], "usage": {"completion_tokens": n}},
                                headers={"x-backend": "fake"})

        async def events():
            yield 'data: {"choices": [{"delta": {"role": "assistant"}}]}\n\n'  # a role-only chunk: not a token
            yield ": keep-alive comment\n\n"
            await asyncio.sleep(delay)
            for i in range(n):
                yield f"data: {json.dumps({'choices': [{'text': 'x'}]})}\n\n"
                await asyncio.sleep(PER_TOKEN_S)
            usage = {"completion_tokens": n, "prompt_tokens_details": {"cached_tokens": 3}}
            yield f"data: {json.dumps({'choices': [], 'usage': usage})}\n\n"
            yield "data: [DONE]\n\n"

        return StreamingResponse(events(), media_type="text/event-stream", headers={"x-backend": "fake"})

    return app


@pytest.fixture(scope="module")
def url():
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(fake_openai_app(), host="127.0.0.1", port=port, log_level="error"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.01)
    yield f"http://127.0.0.1:{port}"
    server.should_exit = True
    thread.join(timeout=10)


def test_ttft_from_the_first_streamed_token(url):
    res = L.run(url, [L.RequestSpec({"prompt": "p", "max_tokens": 5})], max_seconds=10)[0]
    assert res.ok and res.status == 200 and res.backend == "fake" and res.n_tokens == 5 and res.text == "xxxxx"
    assert FIRST_S <= res.ttft < FIRST_S + 0.5  # not the role chunk sent at once
    assert res.latency >= res.ttft + 4 * PER_TOKEN_S and res.cached_tokens == 3


def test_non_streaming_has_latency_but_no_ttft(url):
    res = L.run(url, [L.RequestSpec({"prompt": "p", "max_tokens": 3})], max_seconds=10, stream=False)[0]
    assert res.ok and res.ttft is None and res.latency >= FIRST_S and res.n_tokens == 3


def test_errors_are_results_not_exceptions(url):
    res = L.run(url, [L.RequestSpec({"prompt": "p", "max_tokens": 0})], max_seconds=10)[0]
    assert not res.ok and res.status == 400 and "max_tokens" in res.error
    dead = L.run(f"http://127.0.0.1:{free_port()}", [L.RequestSpec({"prompt": "p"})], max_seconds=5)[0]
    assert not dead.ok and "Connect" in dead.error


def test_bounded_in_seconds(url):
    # 10 requests of ~0.5 s one at a time would take 5 s; the bound is 1 s
    specs = [L.RequestSpec({"prompt": "p", "max_tokens": 2, "delay": 0.45}) for _ in range(10)]
    t0 = time.perf_counter()
    results = L.run(url, specs, concurrency=1, max_seconds=1.0)
    assert time.perf_counter() - t0 < 2.0
    assert len(results) == 10 and 1 <= sum(r.ok for r in results) <= 3
    assert all(r.error and ("time limit" in r.error) for r in results if not r.ok)


def test_arrivals_are_respected_and_concurrency_overlaps(url):
    arrivals = [0.0, 0.3, 0.6]
    res = L.run(url, [L.RequestSpec({"prompt": "p", "max_tokens": 2}) for _ in arrivals], arrivals=arrivals,
                max_seconds=10)
    starts = [r.start for r in res]
    assert all(a <= s < a + 0.25 for a, s in zip(arrivals, starts)), starts  # (a busy 2-core machine)
    # all at once (no arrivals, no limit): the three ~0.16 s requests overlap, wall well under their sum
    res = L.run(url, [L.RequestSpec({"prompt": "p", "max_tokens": 2}) for _ in range(3)], max_seconds=10)
    assert L.summarize(res)["wall"] < 2 * (FIRST_S + PER_TOKEN_S)


def test_run_works_inside_a_running_event_loop(url):
    async def notebook_cell():  # Jupyter: an event loop is already running in this thread
        return L.run(url, [L.RequestSpec({"prompt": "p", "max_tokens": 2})], max_seconds=10)

    assert asyncio.run(notebook_cell())[0].ok


def test_poisson_arrivals():
    a = L.poisson_arrivals(4000, rate=5.0, seed=1)
    assert a[0] == 0 and np.all(np.diff(a) >= 0) and a == L.poisson_arrivals(4000, rate=5.0, seed=1)
    gaps = np.diff(a)
    # mean gap 1/rate = 0.2 s; its standard error is 0.2 / sqrt(3999) = 0.0032: 5 standard errors
    assert abs(gaps.mean() - 0.2) < 5 * 0.2 / np.sqrt(len(gaps))
    # exponential gaps: standard deviation equals the mean (within a few standard errors)
    assert abs(gaps.std() / gaps.mean() - 1) < 0.1


def test_summarize_arithmetic():
    rs = [L.Result(ok=True, start=0.0, ttft=0.1, latency=1.0, n_tokens=10),
          L.Result(ok=True, start=0.5, ttft=0.3, latency=2.5, n_tokens=20, cached_tokens=4),
          L.Result(ok=False, start=1.0, latency=0.1, error="400")]
    s = L.summarize(rs)
    assert (s["n"], s["ok"], s["errors"], s["tokens"]) == (3, 2, 1, 30)
    assert s["wall"] == pytest.approx(3.0) and s["tokens_per_s"] == pytest.approx(10.0)
    assert s["ttft_p50"] == pytest.approx(0.2) and s["latency_p50"] == pytest.approx(1.75)
    assert s["ttft_p99"] == pytest.approx(0.1 + 0.99 * 0.2)
    assert s["tpot_p50"] == pytest.approx(((0.9 / 9) + (2.2 / 19)) / 2) and s["cached_tokens"] == 4


def test_sse_parsing():
    lines = ["", ": comment", "event: message", 'data: {"choices": [{"text": "a"}]}', "",
             'data: {"choices": [{"delta": {"content": "b"}}]}', "data: [DONE]", 'data: {"late": 1}']
    chunks = list(L.iter_sse(lines))
    assert [L.chunk_text(c) for c in chunks] == ["a", "b"]


def test_parse_prometheus():
    text = '# HELP x y\n# TYPE x counter\nllamacpp:requests_processing 2\nvllm:kv_cache_usage_perc{model="m"} 0.25\n'
    assert L.parse_prometheus(text) == {"llamacpp:requests_processing": 2.0,
                                        'vllm:kv_cache_usage_perc{model="m"}': 0.25}
