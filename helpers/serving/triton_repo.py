"""A Triton Inference Server model repository: build it, check it against the model, simulate its batcher, query it.

Triton (https://docs.nvidia.com/deeplearning/triton-inference-server/) serves every model in one folder, the *model
repository*: `<name>/config.pbtxt` says which backend runs the model (ONNX Runtime, TensorRT, PyTorch, Python,
vLLM, TensorRT-LLM, ...), the names, types and shapes of its tensors, how requests are batched and how many copies
run; `<name>/<version>/model.onnx` is the model itself. The course's configs live in `deploy/triton/model_repository/`
(committed); the ONNX files are large build products, so `build` writes a runnable copy in the git-ignored
`cache/triton/model_repository/`:

1. `parse_config`: config.pbtxt read with Triton's own protobuf schema (`tritonclient.grpc.model_config_pb2`), so a
   misspelt field or a wrong enum is a parse error here, as it would be in the server;
2. `onnx_io` + `validate`: every input/output of the config must exist in the ONNX graph with the same data type and
   shape (a symbolic ONNX axis is -1 in the config; with max_batch_size > 0 the batch axis is implicit) — the checks
   the ONNX Runtime backend does when it loads the model, done before any server is started;
3. `simulate`: the dynamic batcher's rule (wait up to max_queue_delay for a preferred batch size) replayed on an
   arrival trace with service times measured with ONNX Runtime, to choose preferred sizes and the delay;
4. `server_ready` / `infer`: the tritonclient HTTP calls against a running server, or the reason there is none.

`python -m helpers.serving.triton_repo build|validate|infer` does the same from a shell.
"""
from __future__ import annotations

import argparse
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..session import ROOT

SOURCE = ROOT / "deploy" / "triton" / "model_repository"  # committed: config.pbtxt per model
BUILD = ROOT / "cache" / "triton" / "model_repository"  # git-ignored: configs + <model>/1/model.onnx
DEFAULT_URL = "127.0.0.1:8000"  # Triton's HTTP port (gRPC is 8001, Prometheus metrics 8002)

# ONNX TensorProto.DataType -> Triton DataType (model_config.proto); the ones an exported LM can have
ONNX_TO_TRITON = {1: "TYPE_FP32", 2: "TYPE_UINT8", 3: "TYPE_INT8", 5: "TYPE_INT16", 6: "TYPE_INT32", 7: "TYPE_INT64",
                  9: "TYPE_BOOL", 10: "TYPE_FP16", 11: "TYPE_FP64", 16: "TYPE_BF16"}


# --------------------------------------------------------------------------------------------------
# The configuration and the model's real signature
# --------------------------------------------------------------------------------------------------

def parse_config(path_or_text):
    """config.pbtxt (a path, or its text) -> a `ModelConfig` protobuf message, parsed against Triton's schema."""
    from google.protobuf import text_format
    from tritonclient.grpc import model_config_pb2  # the schema ships with tritonclient (generated model_config.proto)

    text = Path(path_or_text).read_text() if isinstance(path_or_text, Path) else str(path_or_text)
    return text_format.Parse(text, model_config_pb2.ModelConfig())


def data_type_name(config, value: int) -> str:
    """The enum name of a `data_type` field value, e.g. 8 -> "TYPE_INT64"."""
    return type(config).DESCRIPTOR.fields_by_name["input"].message_type.fields_by_name["data_type"].enum_type \
        .values_by_number[value].name


@dataclass
class TensorSpec:
    """One graph input or output: name, Triton data type name, shape with None for a symbolic (dynamic) axis."""

    name: str
    data_type: str
    shape: tuple

    def __str__(self):
        return f"{self.name}: {self.data_type} {tuple('?' if d is None else d for d in self.shape)}"


def onnx_io(path) -> tuple[list[TensorSpec], list[TensorSpec]]:
    """The inputs and outputs an ONNX file really has (initializers are not inputs), read from its graph."""
    import onnx

    graph = onnx.load(str(path), load_external_data=False).graph
    weights = {t.name for t in graph.initializer}

    def spec(v):
        t = v.type.tensor_type
        shape = tuple(d.dim_value if d.HasField("dim_value") else None for d in t.shape.dim)
        return TensorSpec(v.name, ONNX_TO_TRITON.get(t.elem_type, f"ONNX elem_type {t.elem_type}"), shape)

    return [spec(v) for v in graph.input if v.name not in weights], [spec(v) for v in graph.output]


def validate(model_dir, onnx_path=None) -> list[str]:
    """What is wrong with `model_dir` (config.pbtxt + version folders) as a Triton ONNX Runtime model; [] = nothing.

    onnx_path: the model file to check the tensors against (default: the highest version's model.onnx)."""
    model_dir = Path(model_dir)
    problems = []
    try:
        cfg = parse_config(model_dir / "config.pbtxt")
    except FileNotFoundError:
        return [f"{model_dir}: no config.pbtxt"]
    except Exception as e:  # text_format.ParseError: unknown field, bad enum, syntax
        return [f"{model_dir / 'config.pbtxt'}: does not parse against model_config.proto: {e}"]
    if cfg.name != model_dir.name:
        problems.append(f"name {cfg.name!r} differs from the folder name {model_dir.name!r} (Triton needs them equal)")
    if not (cfg.platform == "onnxruntime_onnx" or cfg.backend == "onnxruntime"):
        problems.append(f"platform {cfg.platform!r} / backend {cfg.backend!r}: expected onnxruntime_onnx / onnxruntime")
    if cfg.max_batch_size < 0:
        problems.append(f"max_batch_size {cfg.max_batch_size} < 0")
    if cfg.HasField("dynamic_batching"):
        db = cfg.dynamic_batching
        if cfg.max_batch_size == 0:
            problems.append("dynamic_batching needs max_batch_size > 0")
        for b in db.preferred_batch_size:
            if not 1 <= b <= cfg.max_batch_size:
                problems.append(f"preferred_batch_size {b} outside 1..max_batch_size={cfg.max_batch_size}")
    for group in cfg.instance_group:
        if group.count < 1:
            problems.append(f"instance_group {group.name or '?'}: count {group.count} < 1")
    versions = sorted(int(p.name) for p in model_dir.iterdir() if p.is_dir() and p.name.isdigit())
    filename = cfg.default_model_filename or "model.onnx"
    if onnx_path is None:
        if not versions:
            return problems + [f"{model_dir}: no version folder (1/, 2/, ...) holding {filename}"]
        onnx_path = model_dir / str(versions[-1]) / filename
    if not Path(onnx_path).is_file():
        return problems + [f"{onnx_path}: missing (build the repository first)"]
    inputs, outputs = onnx_io(onnx_path)
    for kind, declared, real in (("input", cfg.input, inputs), ("output", cfg.output, outputs)):
        real = {t.name: t for t in real}
        for t in declared:
            if t.name not in real:
                problems.append(f"{kind} {t.name!r} is not in the ONNX graph, which has {sorted(real)}")
                continue
            onnx_t = real.pop(t.name)
            dtype = data_type_name(cfg, t.data_type)
            if dtype != onnx_t.data_type:
                problems.append(f"{kind} {t.name}: config says {dtype}, the ONNX graph {onnx_t.data_type}")
            shape = onnx_t.shape
            if cfg.max_batch_size > 0:  # the first ONNX axis is the batch axis: dynamic, and not listed in dims
                if not shape or shape[0] is not None:
                    problems.append(f"{kind} {t.name}: max_batch_size > 0 but ONNX axis 0 is not dynamic: {onnx_t}")
                shape = shape[1:]
            dims = tuple(t.dims)
            if len(dims) != len(shape) or any(d != -1 and s is not None and d != s or d == -1 and s is not None
                                              for d, s in zip(dims, shape)):
                problems.append(f"{kind} {t.name}: config dims {list(dims)} do not match the ONNX shape {onnx_t} "
                                f"(a fixed ONNX axis must be given as its size, a symbolic one as -1 or a size)")
        for name in real if kind == "input" else ():
            problems.append(f"the ONNX graph's input {name!r} is missing from the config")
    return problems


# --------------------------------------------------------------------------------------------------
# Building a runnable repository
# --------------------------------------------------------------------------------------------------

def export_onnx(name: str, path) -> Path:
    """Write model `name` ("tiny_gpt" | "smollm2") to `path` exactly as Module 1.4 exports: LogitsOnly, dynamic
    (batch, seq) axes, opset 18. Written to a temporary name and renamed, so a half-written file is never seen."""
    import torch

    from ..formats import onnx_export as ox

    if name == "tiny_gpt":
        from ..models.tiny_gpt import load_tiny_gpt

        model = load_tiny_gpt(progress=False).model
    elif name == "smollm2":
        from .. import llm

        model, _ = llm.load()
    else:
        raise ValueError(f"unknown model {name!r}: this repository knows tiny_gpt and smollm2")
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    ox.export(ox.LogitsOnly(model), torch.zeros(1, 8, dtype=torch.long), tmp)
    tmp.replace(path)
    return path


def build(models=("tiny_gpt",), dst=BUILD, src=SOURCE, force: bool = False) -> Path:
    """A runnable repository in `dst`: each model's committed config.pbtxt + `1/model.onnx` (exported if missing or
    `force`), validated; raises ValueError listing every problem. Returns `dst`."""
    dst = Path(dst)
    problems = []
    for name in models:
        if not (Path(src) / name / "config.pbtxt").is_file():
            raise FileNotFoundError(f"{src}/{name}/config.pbtxt: no such model in the repository")
        (dst / name / "1").mkdir(parents=True, exist_ok=True)
        shutil.copyfile(Path(src) / name / "config.pbtxt", dst / name / "config.pbtxt")
        onnx_path = dst / name / "1" / "model.onnx"
        if force or not onnx_path.is_file():
            export_onnx(name, onnx_path)
        problems += [f"{name}: {p}" for p in validate(dst / name)]
    if problems:
        raise ValueError("invalid model repository:\n  " + "\n  ".join(problems))
    return dst


# --------------------------------------------------------------------------------------------------
# The dynamic batcher, simulated
# --------------------------------------------------------------------------------------------------

def triton_rule(n_waiting: int, oldest_wait_us: float, preferred: tuple, max_batch: int, max_delay_us: float) -> int:
    """How many queued requests a free instance takes now (0 = keep waiting): Triton's dynamic batcher
    (`DynamicBatchScheduler::GetDynamicBatch` in triton-inference-server/core) for requests of batch size 1.

    A preferred size that the queue can fill is sent at once (the largest one); with none in reach, the batcher
    waits until the oldest request has waited max_queue_delay (no wait when it is 0), then sends everything queued,
    at most max_batch_size."""
    if n_waiting <= 0:
        return 0
    in_reach = [p for p in preferred if p <= min(n_waiting, max_batch)]
    exceeded = max_delay_us > 0 and oldest_wait_us >= max_delay_us
    if in_reach and not exceeded:
        return max(in_reach)
    if exceeded or max_delay_us == 0 or n_waiting >= (max(preferred) if preferred else max_batch):
        return min(n_waiting, max_batch)
    return 0


def service_time_fn(measured_ms: dict):
    """Batch size -> service time in s, linear between the measured batch sizes (and beyond the last two)."""
    sizes = sorted(measured_ms)
    ms = [measured_ms[b] for b in sizes]

    def t(b):
        if b <= sizes[-1]:
            return float(np.interp(b, sizes, ms)) / 1e3
        slope = (ms[-1] - ms[-2]) / (sizes[-1] - sizes[-2])
        return (ms[-1] + slope * (b - sizes[-1])) / 1e3
    return t


def simulate(arrivals, service_s, *, preferred=(), max_batch: int = 1, max_delay_us: float = 0.0,
             instances: int = 1, rule=triton_rule) -> dict:
    """Replay `arrivals` (s, sorted) through `instances` model copies fed by a dynamic batcher following `rule`.

    service_s(batch_size) -> seconds one instance takes for a batch. Discrete-event: time jumps between arrivals,
    batch completions and queue-delay deadlines. Returns per-request latency (s), the batch sizes run, and the
    throughput (requests / s from the first arrival to the last completion)."""
    arrivals = list(arrivals)
    queue: list[int] = []  # indices of waiting requests, oldest first
    free_at = [arrivals[0] if arrivals else 0.0] * instances  # when each instance is next idle
    finish = [0.0] * len(arrivals)
    batches = []
    now, nxt = arrivals[0] if arrivals else 0.0, 0
    while nxt < len(arrivals) or queue:
        while nxt < len(arrivals) and arrivals[nxt] <= now + 1e-12:
            queue.append(nxt)
            nxt += 1
        idle = [i for i in range(instances) if free_at[i] <= now + 1e-12]
        dispatched = False
        for i in idle:
            if not queue:
                break
            waited_us = round((now - arrivals[queue[0]]) * 1e6, 6)  # rounded: at the deadline it is exactly the delay
            b = rule(len(queue), waited_us, tuple(preferred), max_batch, max_delay_us)
            if b <= 0:
                break
            if b > min(len(queue), max_batch):
                raise ValueError(f"rule returned batch {b} with {len(queue)} waiting, max_batch_size {max_batch}")
            batch, queue = queue[:b], queue[b:]
            free_at[i] = now + service_s(b)
            for r in batch:
                finish[r] = free_at[i]
            batches.append(b)
            dispatched = True
        if dispatched:
            continue
        events = [t for t in free_at if t > now + 1e-12]  # an instance frees up
        if nxt < len(arrivals):
            events.append(arrivals[nxt])
        if queue and idle:
            events.append(arrivals[queue[0]] + max_delay_us / 1e6)  # the oldest request's deadline
        later = [t for t in events if t > now + 1e-12]
        if not later:
            raise RuntimeError(f"batcher stalled at t={now} with {len(queue)} waiting: the rule never sends")
        now = min(later)
    latency = np.array(finish) - np.array(arrivals)
    span = max(finish) - arrivals[0] if arrivals else 0.0
    return {"latency_s": latency, "batches": batches, "throughput": len(arrivals) / span if span else 0.0}


def poisson(n: int, rate: float, seed: int = 0) -> np.ndarray:
    """n Poisson arrival times (s) at `rate` requests/s, seeded."""
    return np.cumsum(np.random.default_rng(seed).exponential(1.0 / rate, n))


def batch_ms(session, batch_sizes, seq_len: int, reps: int = 20, seed: int = 0, vocab: int = 65) -> dict:
    """Minimum ms per `session.run` on random (B, seq_len) token ids for each B, repetitions interleaved across B
    (so a slow moment of the machine hits every size alike)."""
    import time

    rng = np.random.default_rng(seed)
    xs = {b: rng.integers(0, vocab, (b, seq_len), dtype=np.int64) for b in batch_sizes}
    name = session.get_inputs()[0].name
    for x in xs.values():  # warm-up: first runs allocate
        session.run(None, {name: x})
    best = {b: float("inf") for b in batch_sizes}
    for _ in range(reps):
        for b, x in xs.items():
            t0 = time.perf_counter()
            session.run(None, {name: x})
            best[b] = min(best[b], (time.perf_counter() - t0) * 1e3)
    return best


# --------------------------------------------------------------------------------------------------
# A running server: tritonclient over HTTP (KServe v2 protocol)
# --------------------------------------------------------------------------------------------------

def server_ready(url: str = DEFAULT_URL, timeout: float = 1.0) -> tuple[bool, str]:
    """(True, "") when a Triton server answers GET /v2/health/ready at `url`, else (False, why not)."""
    import httpx

    try:
        r = httpx.get(f"http://{url}/v2/health/ready", timeout=timeout)
    except httpx.HTTPError as e:
        return False, (f"no Triton server at {url} ({type(e).__name__}); Triton runs from NVIDIA's container "
                       f"(nvcr.io/nvidia/tritonserver), which this machine does not have")
    if r.status_code != 200:
        return False, f"{url} answered /v2/health/ready with HTTP {r.status_code}: the server is not ready"
    return True, ""


def infer(input_ids: np.ndarray, model: str = "tiny_gpt", url: str = DEFAULT_URL) -> np.ndarray:
    """Logits for `input_ids` (B, T) from model `model` on the Triton server at `url`, through tritonclient.http."""
    import tritonclient.http as httpclient

    client = httpclient.InferenceServerClient(url=url)
    if not client.is_model_ready(model):
        raise RuntimeError(f"model {model!r} is not ready on {url}; loaded: "
                           f"{[m['name'] for m in client.get_model_repository_index()]}")
    ids = np.ascontiguousarray(input_ids, dtype=np.int64)  # (B, T)
    inp = httpclient.InferInput("input_ids", list(ids.shape), "INT64")
    inp.set_data_from_numpy(ids, binary_data=True)
    result = client.infer(model, [inp], outputs=[httpclient.InferRequestedOutput("logits", binary_data=True)])
    return result.as_numpy("logits")  # (B, T, V)


def main(argv=None):
    ap = argparse.ArgumentParser(prog="python -m helpers.serving.triton_repo", description=__doc__.splitlines()[0])
    ap.add_argument("command", choices=("build", "validate", "infer"))
    ap.add_argument("--model", action="append", help="model name (repeatable); default tiny_gpt")
    ap.add_argument("--repo", type=Path, default=BUILD)
    ap.add_argument("--url", default=DEFAULT_URL)
    args = ap.parse_args(argv)
    models = args.model or ["tiny_gpt"]
    if args.command == "build":
        print(f"built {build(models, dst=args.repo)}")
    elif args.command == "validate":
        bad = {m: validate(args.repo / m) for m in models}
        for m, problems in bad.items():
            print(f"{m}: " + ("ok" if not problems else "\n  ".join(["INVALID", *problems])))
        raise SystemExit(1 if any(bad.values()) else 0)
    else:
        ok, why = server_ready(args.url)
        if not ok:
            raise SystemExit(why)
        for m in models:
            logits = infer(np.zeros((1, 8), np.int64), m, args.url)
            print(f"{m}: logits {logits.shape} {logits.dtype}")


if __name__ == "__main__":
    main()
