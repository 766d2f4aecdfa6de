"""helpers.serving.server: the OpenAI-compatible API over an engine, tested against a deterministic fake engine
(known tokens, controllable speed) on a real uvicorn server in a thread; plus the real engine (slow)."""
import json
import threading
import time
from dataclasses import dataclass

import httpx
import pytest
import uvicorn

from helpers.serving import server as S
from helpers.serving.engine import SamplingParams
from helpers.serving.processes import free_port


# ------------------------------------------------------------------------------------------------
# A fake engine with the Engine contract: sequence token k is a letter fixed by the prompt, one token per step.


@dataclass
class Out:  # the fields of engine.StepOutput the server reads
    request_id: str
    index: int
    token_id: int
    finished: bool
    finish_reason: str | None


class FakeEngine:
    """Token k (k = 0, 1, ...) of every sequence is ord('a') + (sum(prompt) + k) % 26; `step_s` per step."""

    def __init__(self, max_context=64, eos_token_id=None, step_s=0.002):
        self.max_context, self.eos, self.step_s = max_context, eos_token_id, step_s
        self.running: dict[tuple[str, int], dict] = {}
        self.aborted, self.seen = [], {}

    @staticmethod
    def expected(prompt_ids, n):
        return [ord("a") + (sum(prompt_ids) + k) % 26 for k in range(n)]

    def add_request(self, prompt_ids, params, request_id=None):
        if not prompt_ids:
            raise ValueError("empty prompt")
        if len(prompt_ids) + params.max_tokens > self.max_context:
            raise ValueError(f"prompt + max_tokens exceeds the context ({self.max_context})")
        if prompt_ids == [ord(c) for c in "crash"]:
            self.crash = True
        self.seen[request_id] = params
        for i in range(params.n):
            self.running[(request_id, i)] = {"prompt": prompt_ids, "out": [], "params": params}
        return request_id

    def step(self):
        if getattr(self, "crash", False):
            self.crash = False
            raise RuntimeError("boom")
        time.sleep(self.step_s)
        outs = []
        for (rid, i), s in list(self.running.items()):
            tok = self.expected(s["prompt"], len(s["out"]) + 1)[-1]
            s["out"].append(tok)
            stop = tok == self.eos or tok in s["params"].stop_token_ids
            done = stop or len(s["out"]) == s["params"].max_tokens
            outs.append(Out(rid, i, tok, done, "stop" if stop else "length" if done else None))
            if done:
                del self.running[(rid, i)]
        return outs

    def has_unfinished(self):
        return bool(self.running)

    def abort(self, request_id):
        self.aborted.append(request_id)
        for key in [k for k in self.running if k[0] == request_id]:
            del self.running[key]

    def stats(self):
        return {"running": len(self.running), "waiting": 0, "blocks_used": 0, "blocks_free": 100}


class AsciiTokenizer:
    """One token per ASCII character; a chat template that tags each message."""

    vocab_size = 128

    def encode(self, text):
        return [ord(c) for c in text]

    def decode(self, ids):
        return "".join(map(chr, ids))

    def apply_chat_template(self, messages, add_generation_prompt=True, tokenize=True):
        return self.encode("".join(f"<{m['role']}>{m['content']}" for m in messages) + "<assistant>")


class Served:
    def __init__(self, engine, **kwargs):
        self.engine = engine
        app = S.make_app(engine, AsciiTokenizer(), "fake", **kwargs)
        self.port = free_port()
        self.server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="error"))
        self.thread = threading.Thread(target=self.server.run, daemon=True)
        self.thread.start()
        while not self.server.started:
            time.sleep(0.01)
        self.client = httpx.Client(base_url=f"http://127.0.0.1:{self.port}", timeout=10)

    def close(self):
        self.client.close()
        self.server.should_exit = True
        self.thread.join(timeout=10)


@pytest.fixture
def srv():
    s = Served(FakeEngine(max_context=64, eos_token_id=ord("!")))
    yield s
    s.close()


def expected_text(prompt, n):
    return "".join(map(chr, FakeEngine.expected([ord(c) for c in prompt], n)))


def sse_lines(response):
    return [json.loads(line[6:]) if line.startswith("data: {") else line for line in response.iter_lines() if line]


# ------------------------------------------------------------------------------------------------


def test_completion_text_usage_and_backend_header(srv):
    r = srv.client.post("/v1/completions", json={"prompt": "hello", "max_tokens": 5, "temperature": 0,
                                                  "return_token_ids": True})
    assert r.status_code == 200 and r.headers["x-backend"] == "fake"
    body = r.json()
    assert body["object"] == "text_completion" and body["model"] == "fake"
    assert body["choices"][0]["text"] == expected_text("hello", 5)
    assert body["choices"][0]["finish_reason"] == "length"
    assert body["choices"][0]["token_ids"] == FakeEngine.expected([ord(c) for c in "hello"], 5)
    assert body["usage"] == {"prompt_tokens": 5, "completion_tokens": 5, "total_tokens": 10}
    params = srv.engine.seen[body["id"]]
    assert isinstance(params, SamplingParams) and params.max_tokens == 5 and params.temperature == 0


def test_stream_equals_non_stream_and_ends_with_done(srv):
    body = {"prompt": "stream me", "max_tokens": 7, "temperature": 0, "stream": True,
            "stream_options": {"include_usage": True}}
    with srv.client.stream("POST", "/v1/completions", json=body) as r:
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
        events = sse_lines(r)
    assert events[-1] == "data: [DONE]"
    chunks = [e for e in events[:-1] if e["choices"]]
    assert "".join(c["choices"][0]["text"] for c in chunks) == expected_text("stream me", 7)
    assert len(chunks) == 7 and chunks[-1]["choices"][0]["finish_reason"] == "length"
    assert events[-2]["usage"]["completion_tokens"] == 7 and events[-2]["choices"] == []


def test_stop_token_is_counted_not_shown(srv):
    toks = FakeEngine.expected([ord(c) for c in "stop"], 3)
    r = srv.client.post("/v1/completions", json={"prompt": "stop", "max_tokens": 10, "stop_token_ids": [toks[2]]})
    c = r.json()["choices"][0]
    assert c["finish_reason"] == "stop" and c["text"] == expected_text("stop", 2)
    assert r.json()["usage"]["completion_tokens"] == 3


def test_chat_uses_the_template_stream_and_not(srv):
    msgs = [{"role": "system", "content": "be brief"}, {"role": "user", "content": "hi"}]
    prompt = "<system>be brief<user>hi<assistant>"
    r = srv.client.post("/v1/chat/completions", json={"messages": msgs, "max_tokens": 4})
    body = r.json()
    assert body["object"] == "chat.completion" and body["choices"][0]["message"] == {
        "role": "assistant", "content": expected_text(prompt, 4)}
    assert body["usage"]["prompt_tokens"] == len(prompt)
    with srv.client.stream("POST", "/v1/chat/completions", json={"messages": msgs, "max_tokens": 4,
                                                                 "stream": True}) as r:
        events = sse_lines(r)
    deltas = [e["choices"][0]["delta"].get("content", "") for e in events[:-1]]
    assert "".join(deltas) == expected_text(prompt, 4) and events[0]["object"] == "chat.completion.chunk"


def test_parallel_sampling_n_choices(srv):
    r = srv.client.post("/v1/completions", json={"prompt": "ab", "max_tokens": 3, "n": 2})
    choices = r.json()["choices"]
    assert [c["index"] for c in choices] == [0, 1] and all(c["text"] == expected_text("ab", 3) for c in choices)
    assert r.json()["usage"]["completion_tokens"] == 6


BAD = [  # (description, body or raw bytes, path, status, words the message must contain)
    ("malformed JSON", b'{"prompt": "x", ', "/v1/completions", 400, "malformed JSON"),
    ("missing prompt", {"max_tokens": 3}, "/v1/completions", 400, "prompt"),
    ("prompt longer than the context", {"prompt": "x" * 100}, "/v1/completions", 400, "context"),
    ("prompt + max_tokens over the context", {"prompt": "x" * 30, "max_tokens": 40}, "/v1/completions", 400,
     "context"),
    ("max_tokens 0", {"prompt": "x", "max_tokens": 0}, "/v1/completions", 400, "max_tokens"),
    ("negative max_tokens", {"prompt": "x", "max_tokens": -5}, "/v1/completions", 400, "max_tokens"),
    ("unknown model", {"prompt": "x", "model": "gpt-9"}, "/v1/completions", 404, "gpt-9"),
    ("max_tokens as a string", {"prompt": "x", "max_tokens": "16"}, "/v1/completions", 400, "max_tokens"),
    ("prompt as a number", {"prompt": 5}, "/v1/completions", 400, "prompt"),
    ("temperature negative", {"prompt": "x", "temperature": -1}, "/v1/completions", 400, "temperature"),
    ("stream not a bool", {"prompt": "x", "stream": "yes"}, "/v1/completions", 400, "stream"),
    ("empty prompt", {"prompt": ""}, "/v1/completions", 400, "empty"),
    ("token id outside the vocabulary", {"prompt": [1, 999]}, "/v1/completions", 400, "token ids"),
    ("a JSON array, not an object", [1, 2], "/v1/completions", 400, "body"),
    ("chat without messages", {"max_tokens": 3}, "/v1/chat/completions", 400, "messages"),
    ("chat with an unknown role", {"messages": [{"role": "robot", "content": "x"}]}, "/v1/chat/completions", 400,
     "role"),
    ("chat with empty messages", {"messages": []}, "/v1/chat/completions", 400, "messages"),
]


@pytest.mark.parametrize("what, body, path, status, words", BAD, ids=[b[0] for b in BAD])
def test_bad_requests_get_4xx_and_the_server_keeps_serving(srv, what, body, path, status, words):
    if isinstance(body, bytes):
        r = srv.client.post(path, content=body, headers={"content-type": "application/json"})
    else:
        r = srv.client.post(path, json=body)
    assert r.status_code == status, r.text
    err = r.json()["error"]
    assert words.lower() in err["message"].lower() and err["type"]
    ok = srv.client.post("/v1/completions", json={"prompt": "ok", "max_tokens": 2})
    assert ok.status_code == 200 and ok.json()["choices"][0]["text"] == expected_text("ok", 2)


def test_concurrent_requests_each_get_their_own_tokens(srv):
    prompts = [f"request {i}" for i in range(8)]
    results = [None] * len(prompts)

    def go(i):
        results[i] = httpx.post(f"http://127.0.0.1:{srv.port}/v1/completions",
                                json={"prompt": prompts[i], "max_tokens": 6 + i}, timeout=10).json()

    threads = [threading.Thread(target=go, args=(i,)) for i in range(len(prompts))]
    [t.start() for t in threads]
    [t.join() for t in threads]
    assert [r["choices"][0]["text"] for r in results] == [expected_text(p, 6 + i) for i, p in enumerate(prompts)]


def test_client_disconnect_aborts_the_request():
    s = Served(FakeEngine(max_context=4096, step_s=0.02))
    try:
        with s.client.stream("POST", "/v1/completions", json={"prompt": "long", "max_tokens": 2000,
                                                              "stream": True}) as r:
            first = next(r.iter_lines())
            assert first.startswith("data: ")
        rid = json.loads(first[6:])["id"]
        end = time.monotonic() + 5
        while rid not in s.engine.aborted and time.monotonic() < end:
            time.sleep(0.02)
        assert rid in s.engine.aborted and not s.engine.running
        metrics = s.client.get("/metrics").text
        assert "engine_requests_aborted_total 1" in metrics
    finally:
        s.close()


def test_models_health_metrics(srv):
    assert srv.client.get("/health").json() == {"status": "ok"}
    assert srv.client.get("/v1/models").json()["data"][0]["id"] == "fake"
    srv.client.post("/v1/completions", json={"prompt": "m", "max_tokens": 3})
    m = dict(line.split(" ") for line in srv.client.get("/metrics").text.strip().splitlines())
    assert m["engine_requests_total"] == "1" and m["engine_generation_tokens_total"] == "3"
    assert m["engine_running"] == "0" and m["engine_blocks_free"] == "100"


def test_engine_failure_is_a_500_and_the_server_recovers(srv):
    r = srv.client.post("/v1/completions", json={"prompt": "crash", "max_tokens": 3})
    assert r.status_code == 500 and "boom" in r.json()["error"]["message"]
    assert srv.client.post("/v1/completions", json={"prompt": "ok", "max_tokens": 2}).status_code == 200


def test_detokenizer_holds_back_incomplete_utf8():
    class Bytes:
        def decode(self, ids):
            return bytes(ids).decode("utf-8", errors="replace")

    text = "héllo € ok"
    d = S.Detokenizer(Bytes())
    deltas = [d.add(b) for b in text.encode()]
    assert "".join(deltas) == text and not any("\ufffd" in x for x in deltas)


def test_sse_format():
    assert S.sse({"a": 1}) == 'data: {"a": 1}\n\n' and S.SSE_DONE == "data: [DONE]\n\n"


# ------------------------------------------------------------------------------------------------
# The real thing: SmolLM2 in our engine behind `python -m helpers.serving.server`


@pytest.mark.slow
def test_real_engine_server_greedy_equals_reference():
    from helpers import llm
    from helpers.models.llama import Llama
    from helpers.serving.kv_cache import generate
    from helpers.serving.processes import engine_server

    hf, tok = llm.load()
    prompt = "The capital of France is"
    ids = tok.encode(prompt)
    ref = generate(Llama.from_hf(hf).eval(), ids, 8, eos_id=hf.generation_config.eos_token_id)
    with engine_server(threads=1, num_blocks=64) as p:
        r = httpx.post(p.url + "/v1/completions", json={"prompt": prompt, "max_tokens": 8, "temperature": 0,
                                                       "return_token_ids": True}, timeout=60)
        assert r.status_code == 200 and r.headers["x-backend"] == "smollm2-135m-instruct"
        assert r.json()["choices"][0]["token_ids"] == ref
        bad = httpx.post(p.url + "/v1/completions", json={"prompt": prompt, "max_tokens": -1}, timeout=60)
        assert bad.status_code == 400


@pytest.mark.slow
def test_real_server_serves_the_course_gpt():
    from helpers.serving.processes import engine_server

    with engine_server(model="gpt", threads=1, num_blocks=16) as p:
        r = httpx.post(p.url + "/v1/completions", json={"prompt": "ROMEO:", "max_tokens": 10}, timeout=60)
        assert r.status_code == 200 and r.json()["usage"]["completion_tokens"] == 10
        assert httpx.post(p.url + "/v1/chat/completions", json={"messages": [{"role": "user", "content": "hi"}]},
                          timeout=60).status_code == 400  # a character model has no chat template
        assert httpx.post(p.url + "/v1/completions", json={"prompt": "ROMEO: \u2603"}, timeout=60).status_code == 400
        assert httpx.post(p.url + "/v1/completions", json={"prompt": "x" * 40}, timeout=60).status_code == 400
