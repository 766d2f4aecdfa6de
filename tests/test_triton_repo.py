"""The Triton model repository: configs parse with Triton's schema and match the ONNX model's real tensors; the
validator catches each kind of mismatch; the batcher simulation agrees with closed forms; the tritonclient code
talks the KServe v2 protocol (against a minimal in-process server over ONNX Runtime, since Triton itself is not
installable here)."""
import json
import shutil
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np
import pytest

from helpers.serving import triton_repo as tr


@pytest.fixture(scope="module")
def repo(tmp_path_factory):
    return tr.build(("tiny_gpt",), dst=tmp_path_factory.mktemp("triton") / "model_repository")


def mutated(repo, tmp_path, old, new, name="tiny_gpt"):
    """A copy of the tiny_gpt model folder whose config.pbtxt has `old` replaced by `new`."""
    dst = tmp_path / name
    shutil.copytree(repo / "tiny_gpt", dst)
    text = (dst / "config.pbtxt").read_text()
    assert old in text, old
    (dst / "config.pbtxt").write_text(text.replace(old, new))
    return dst


def test_committed_configs_parse_with_tritons_schema():
    for name in ("tiny_gpt", "smollm2"):
        cfg = tr.parse_config(tr.SOURCE / name / "config.pbtxt")
        assert cfg.name == name and cfg.platform == "onnxruntime_onnx"
        assert cfg.max_batch_size > 0 and cfg.HasField("dynamic_batching")
        assert all(1 <= b <= cfg.max_batch_size for b in cfg.dynamic_batching.preferred_batch_size)
        assert cfg.dynamic_batching.max_queue_delay_microseconds > 0
        assert [i.name for i in cfg.input] == ["input_ids"] and [o.name for o in cfg.output] == ["logits"]
        assert len(cfg.instance_group) >= 1 and cfg.instance_group[0].count >= 1


def test_built_repository_matches_the_onnx_graph(repo):
    assert sorted(p.name for p in repo.iterdir()) == ["tiny_gpt"]
    assert (repo / "tiny_gpt" / "1" / "model.onnx").is_file()
    assert tr.validate(repo / "tiny_gpt") == []
    inputs, outputs = tr.onnx_io(repo / "tiny_gpt" / "1" / "model.onnx")
    assert [(t.name, t.data_type, t.shape) for t in inputs] == [("input_ids", "TYPE_INT64", (None, None))]
    assert [(t.name, t.data_type, t.shape) for t in outputs] == [("logits", "TYPE_FP32", (None, None, 65))]


@pytest.mark.parametrize("old,new,expected", [
    ("TYPE_INT64", "TYPE_INT32", "config says TYPE_INT32, the ONNX graph TYPE_INT64"),
    ('name: "input_ids"', 'name: "tokens"', "'tokens' is not in the ONNX graph"),
    ("dims: [ -1, 65 ]", "dims: [ -1, 64 ]", "do not match the ONNX shape"),
    ("dims: [ -1 ]", "dims: [ -1, -1 ]", "do not match the ONNX shape"),
    ('name: "tiny_gpt"', 'name: "tinygpt"', "differs from the folder name"),
    ("preferred_batch_size: [ 4, 8 ]", "preferred_batch_size: [ 4, 32 ]", "preferred_batch_size 32 outside"),
    ("max_batch_size: 16", "max_batch_size: 0", "dynamic_batching needs max_batch_size > 0"),
    ("count: 2", "count: 0", "count 0 < 1"),
    ("max_queue_delay_microseconds", "max_queue_delay_us", "does not parse against model_config.proto"),
    ("KIND_CPU", "KIND_TPU", "does not parse against model_config.proto"),
])
def test_validate_catches_each_mismatch(repo, tmp_path, old, new, expected):
    problems = tr.validate(mutated(repo, tmp_path, old, new))
    assert any(expected in p for p in problems), problems


def test_validate_without_batching_needs_the_batch_axis_in_dims(repo, tmp_path):
    # max_batch_size 0: dims are the full ONNX shape, so the batch axis must be listed
    d = mutated(repo, tmp_path, "max_batch_size: 16", "max_batch_size: 0")
    text = (d / "config.pbtxt").read_text()
    start = text.index("dynamic_batching {")
    text = text[:start] + text[text.index("}", start) + 1:]
    (d / "config.pbtxt").write_text(text.replace("dims: [ -1 ]", "dims: [ -1, -1 ]")
                                    .replace("dims: [ -1, 65 ]", "dims: [ -1, -1, 65 ]"))
    assert tr.validate(d) == []


def test_validate_reports_a_missing_model_file(repo, tmp_path):
    d = mutated(repo, tmp_path, "count: 2", "count: 2")
    shutil.rmtree(d / "1")
    assert any("no version folder" in p for p in tr.validate(d))
    with pytest.raises(ValueError, match="preferred_batch_size 32"):
        src = tmp_path / "src"
        mutated(repo, src, "[ 4, 8 ]", "[ 4, 32 ]")
        tr.build(("tiny_gpt",), dst=tmp_path / "built", src=src)


def test_triton_rule():
    assert tr.triton_rule(8, 0, (4, 8), 16, 500) == 8  # the largest preferred size in reach: sent at once
    assert tr.triton_rule(20, 0, (4, 8), 16, 500) == 8
    assert tr.triton_rule(5, 100, (4, 8), 16, 500) == 4  # a smaller preferred size is sent at once too
    assert tr.triton_rule(3, 100, (4, 8), 16, 500) == 0  # none in reach: wait for the delay
    assert tr.triton_rule(3, 500, (4, 8), 16, 500) == 3  # delay over: send what is there
    assert tr.triton_rule(20, 500, (4, 8), 16, 500) == 16  # ... at most max_batch_size
    assert tr.triton_rule(3, 0, (4, 8), 16, 0) == 3  # no delay configured: never wait
    assert tr.triton_rule(5, 0, (4, 8), 16, 0) == 4
    assert tr.triton_rule(3, 0, (), 3, 500) == 3  # no preferred sizes: max_batch_size is the target
    assert tr.triton_rule(2, 0, (), 3, 500) == 0
    assert tr.triton_rule(0, 1e9, (4,), 16, 0) == 0


def test_simulate_closed_forms():
    s = tr.service_time_fn({1: 1.0, 8: 4.0})  # ms: 1 at batch 1, 4 at batch 8
    assert s(1) == pytest.approx(1e-3) and s(8) == pytest.approx(4e-3) and s(15) == pytest.approx(7e-3)
    # no batching, arrivals exactly one service time apart: nobody waits, latency = service time
    r = tr.simulate(np.arange(10) * 1e-3, s)
    assert r["batches"] == [1] * 10 and np.allclose(r["latency_s"], 1e-3)
    # a burst of 8 at t=0 with preferred 8: one batch, sent at once
    r = tr.simulate(np.zeros(8), s, preferred=(8,), max_batch=8, max_delay_us=1000)
    assert r["batches"] == [8] and np.allclose(r["latency_s"], 4e-3)
    # 3 at t=0, preferred 4 never reached: sent when the oldest has waited 1000 us
    r = tr.simulate(np.zeros(3), s, preferred=(4, 8), max_batch=8, max_delay_us=1000)
    assert r["batches"] == [3] and np.allclose(r["latency_s"], 1e-3 + s(3))
    # the same burst without batching, two instances: pairs of requests finish together
    r = tr.simulate(np.zeros(4), s, instances=2)
    assert sorted(r["latency_s"].round(9)) == [1e-3, 1e-3, 2e-3, 2e-3]


def test_simulate_serves_every_request_on_random_traces():
    # float deadlines (e.g. 1234.567 us) must not stall the event loop; every request is served exactly once
    s = tr.service_time_fn({1: 0.14, 4: 0.26, 8: 0.42, 16: 0.8})
    rng = np.random.default_rng(1)
    for i in range(200):
        arrivals = tr.poisson(int(rng.integers(1, 300)), rng.uniform(500, 40_000), seed=i)
        r = tr.simulate(arrivals, s, preferred=[(), (4, 8), (2,), (3, 6)][i % 4], max_batch=16,
                        max_delay_us=float(rng.choice([0, 100, 500, 1234.567])), instances=int(rng.integers(1, 3)))
        assert sum(r["batches"]) == len(arrivals) and (r["latency_s"] > 0).all()
        assert max(r["batches"]) <= 16


def test_simulate_rejects_a_rule_that_overfills():
    with pytest.raises(ValueError, match="rule returned batch"):
        tr.simulate(np.zeros(2), lambda b: 1e-3, max_batch=1, rule=lambda n, w, p, m, d: n)


def test_batching_raises_throughput_above_capacity(repo):
    from helpers.formats import onnx_export as ox

    ms = tr.batch_ms(ox.session(repo / "tiny_gpt" / "1" / "model.onnx", threads=1), (1, 4, 8), seq_len=8, reps=5)
    s = tr.service_time_fn(ms)
    rate = 1.5 / s(1)  # 1.5x what one instance can do one request at a time
    arrivals = tr.poisson(600, rate, seed=0)
    plain = tr.simulate(arrivals, s)
    batched = tr.simulate(arrivals, s, preferred=(4, 8), max_batch=16, max_delay_us=500)
    assert ms[8] < 8 * ms[1]  # one batch of 8 is cheaper than 8 single calls
    assert batched["throughput"] > plain["throughput"]
    assert np.percentile(batched["latency_s"], 99) < np.percentile(plain["latency_s"], 99)


def test_server_ready_says_why_not():
    from helpers.serving.processes import free_port

    ok, why = tr.server_ready(f"127.0.0.1:{free_port()}", timeout=0.5)
    assert not ok and "no Triton server" in why


class KServeV2(BaseHTTPRequestHandler):
    """The three KServe v2 endpoints `infer` uses, over ONNX Runtime: enough to exercise tritonclient's real
    requests (binary tensor extension included) when no Triton server exists."""

    session = None

    def log_message(self, *args):
        pass

    def _json(self, obj, status=200):
        body = json.dumps(obj).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self):
        self._json({}, 200 if self.path in ("/v2/health/ready", "/v2/models/tiny_gpt/ready") else 404)

    def do_POST(self):
        body = self.rfile.read(int(self.headers["Content-Length"]))
        n = int(self.headers.get("Inference-Header-Content-Length", len(body)))
        header, raw = json.loads(body[:n]), body[n:]
        (inp,) = header["inputs"]
        ids = np.frombuffer(raw[:inp["parameters"]["binary_data_size"]], np.int64).reshape(inp["shape"])
        logits = self.session.run(["logits"], {"input_ids": ids})[0]
        self._json({"model_name": "tiny_gpt", "outputs": [{"name": "logits", "datatype": "FP32",
                                                          "shape": list(logits.shape),
                                                          "data": logits.ravel().tolist()}]})


def test_infer_through_tritonclient(repo):
    from helpers.formats import onnx_export as ox
    from helpers.serving.processes import free_port

    KServeV2.session = ox.session(repo / "tiny_gpt" / "1" / "model.onnx", threads=1)
    port = free_port()
    server = ThreadingHTTPServer(("127.0.0.1", port), KServeV2)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        url = f"127.0.0.1:{port}"
        assert tr.server_ready(url) == (True, "")
        ids = np.arange(16, dtype=np.int64).reshape(2, 8) % 65
        logits = tr.infer(ids, "tiny_gpt", url)
        assert logits.shape == (2, 8, 65)
        np.testing.assert_allclose(logits, KServeV2.session.run(["logits"], {"input_ids": ids})[0], rtol=1e-6)
    finally:
        server.shutdown()
        server.server_close()


@pytest.mark.slow
def test_smollm2_config_matches_its_export(tmp_path):
    repo = tr.build(("smollm2",), dst=tmp_path / "model_repository")  # exports SmolLM2 (~650 MB, 10-45 s)
    assert tr.validate(repo / "smollm2") == []
