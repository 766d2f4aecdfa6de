"""Start and stop servers safely: a context manager that always terminates what it started.

A notebook that starts a server and then fails in a cell must not leave the server running (it would hold a port and
two cores of a shared machine). `serve` therefore

1. starts the command in a new session (`start_new_session=True`), so the server and every child it forks share one
   process group whose id is the server's pid;
2. sends its output to a log file (a pipe nobody reads would fill up and block the server);
3. waits until `GET http://127.0.0.1:{port}{health_path}` answers 200 — if the process exits first, or the wait times
   out, the error carries the last lines of its log;
4. in a `finally`, whatever happened inside the `with` block, terminates the whole process group: SIGTERM, up to
   5 s to exit cleanly, then SIGKILL.

Servers bind 127.0.0.1 only. `llama_server` and `engine_server` are the two servers of Module 2.2 (and of 2.1's router
experiments); `serving_gguf` builds the SmolLM2 GGUF file llama-server reads, reproducibly and atomically.
"""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from ..session import ROOT

LOGS = ROOT / "cache" / "serving" / "logs"  # one log file per started server (git-ignored, like all of cache/)
GGUF_DIR = ROOT / "cache" / "llama.cpp" / "serving"


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nobody listens on right now (the OS picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class ServerFailed(RuntimeError):
    """A server exited or never became healthy; the message ends with its log's last lines."""


class Process:
    """A started server: its name, base url, pid (= its process group id), Popen object and log file."""

    def __init__(self, name: str, port: int, proc: subprocess.Popen, log: Path):
        self.name, self.port, self.proc, self.log = name, port, proc, log
        self.url = f"http://127.0.0.1:{port}"
        self.pid = proc.pid

    def alive(self) -> bool:
        return self.proc.poll() is None

    def log_tail(self, n: int = 20) -> str:
        """The last n lines of the server's output (stdout and stderr)."""
        try:
            lines = self.log.read_text(errors="replace").splitlines()
        except OSError:
            return ""
        return "\n".join(lines[-n:])

    def kill(self) -> None:
        """Kill the whole process group now (SIGKILL), e.g. to test a router's failover."""
        _signal_group(self.pid, signal.SIGKILL)
        self.proc.wait()

    def __repr__(self) -> str:
        return f"Process({self.name!r}, {self.url}, pid={self.pid}, {'alive' if self.alive() else 'exited'})"


def _signal_group(pgid: int, sig: int) -> None:
    try:
        os.killpg(pgid, sig)
    except (ProcessLookupError, PermissionError):
        pass  # already gone


def terminate(p: Process, grace: float = 5.0) -> None:
    """SIGTERM to the process group, up to `grace` seconds to exit, then SIGKILL; reaps the server's pid."""
    _signal_group(p.pid, signal.SIGTERM)
    try:
        p.proc.wait(timeout=grace)
    except subprocess.TimeoutExpired:
        pass
    _signal_group(p.pid, signal.SIGKILL)  # also any child that outlived its parent
    p.proc.wait()


def _healthy(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as r:
            return r.status == 200
    except (urllib.error.URLError, ConnectionError, TimeoutError, OSError):
        return False  # not listening yet, or 503 while loading the model


@contextmanager
def serve(cmd: list[str], *, port: int, health_path: str = "/health", timeout: float = 120,
          env: dict | None = None, name: str | None = None) -> Iterator[Process]:
    """Run `cmd` (a server listening on 127.0.0.1:`port`) for the duration of a `with` block.

    Yields once GET {health_path} answers 200. Raises ServerFailed (with the log's tail) if the process exits or is
    not healthy within `timeout` seconds. On leaving the block — normally or by an exception — the process group is
    terminated (SIGTERM, 5 s, SIGKILL)."""
    name = name or Path(cmd[0]).name
    LOGS.mkdir(parents=True, exist_ok=True)
    log = LOGS / f"{name}-{port}.log"
    with open(log, "wb") as fh:  # the child keeps its own copy of the descriptor
        proc = subprocess.Popen([str(c) for c in cmd], stdout=fh, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                start_new_session=True, env={**os.environ, **(env or {})})
    p = Process(name, port, proc, log)
    try:
        deadline = time.monotonic() + timeout
        while not _healthy(p.url + health_path):
            if proc.poll() is not None:
                raise ServerFailed(f"{name} exited with {proc.returncode} during start-up; last lines of {log}:\n"
                                   f"{p.log_tail(15)}")
            if time.monotonic() > deadline:
                raise ServerFailed(f"{name} not healthy at {p.url}{health_path} after {timeout:.0f} s; last lines "
                                   f"of {log}:\n{p.log_tail(15)}")
            time.sleep(0.1)
        yield p
    finally:
        terminate(p)


# ------------------------------------------------------------------------------------------------
# llama.cpp's server on SmolLM2


def serving_gguf(quant: str = "Q8_0") -> Path:
    """SmolLM2-135M-Instruct as a GGUF file for llama-server, `quant` in F16, Q8_0, Q4_K_M, ... (built if missing).

    The same pipeline as notebook 1-04: the course's float copy (helpers.llm) -> `hf_folder_for_conversion` ->
    convert_hf_to_gguf.py to F16 -> llama-quantize. Each file is written under a temporary name in the same folder and
    renamed with os.replace (atomic on one filesystem), so two notebooks building it at once never read a half-written
    file; the conversion is deterministic, so either writer's file is the same."""
    from .. import llm
    from ..formats import llama_cpp as lc

    quant = quant.upper()
    GGUF_DIR.mkdir(parents=True, exist_ok=True)
    f16 = GGUF_DIR / "smollm2-135m-instruct-f16.gguf"
    out = GGUF_DIR / f"smollm2-135m-instruct-{quant.lower()}.gguf"
    if out.is_file():
        return out
    with tempfile.TemporaryDirectory(dir=GGUF_DIR, prefix=".build-") as tmp:
        tmp = Path(tmp)
        if not f16.is_file():
            # the folder's name becomes general.name, as in 1-04
            src = lc.hf_folder_for_conversion(llm.cache_dir(), tmp / "smollm2-135m-instruct")
            lc.run("convert_hf_to_gguf.py", src, "--outtype", "f16", "--outfile", tmp / "f16.gguf", timeout=900)
            os.replace(tmp / "f16.gguf", f16)
        if quant != "F16":
            lc.run("llama-quantize", f16, tmp / "q.gguf", quant, timeout=900)
            os.replace(tmp / "q.gguf", out)
    return out


@contextmanager
def llama_server(gguf: Path, *, port: int | None = None, parallel: int = 4, ctx_size: int = 4096, threads: int = 2,
                 extra: tuple = (), timeout: float = 120) -> Iterator[Process]:
    """llama.cpp's `llama-server` on `gguf`, 127.0.0.1 only: `parallel` slots (continuous batching is its default),
    a KV cache of `ctx_size` tokens in all (each slot gets ctx_size / parallel), `threads` threads, /metrics on, no
    web UI. OMP_WAIT_POLICY=passive: idle OpenMP threads sleep instead of spinning on a shared 2-core machine."""
    from ..formats import llama_cpp as lc

    port = port or free_port()
    cmd = [lc.tool("llama-server"), "-m", gguf, "--host", "127.0.0.1", "--port", port, "--parallel", parallel,
           "--ctx-size", ctx_size, "--threads", threads, "--threads-batch", threads, "--metrics", "--no-webui",
           *extra]
    with serve(cmd, port=port, timeout=timeout, env={"OMP_WAIT_POLICY": "passive"},
               name=f"llama-server-{Path(gguf).stem}") as p:
        yield p


@contextmanager
def engine_server(*, port: int | None = None, threads: int = 2, timeout: float = 120, model: str = "smollm2",
                  **engine_kwargs) -> Iterator[Process]:
    """Our engine behind our OpenAI-compatible server (`python -m helpers.serving.server`), 127.0.0.1 only, with
    `threads` torch threads and OMP_WAIT_POLICY=passive (the same conditions as `llama_server`).

    `engine_kwargs` become command-line options: num_blocks=256 -> `--num-blocks 256` (see server.py's main)."""
    port = port or free_port()
    cmd = [sys.executable, "-m", "helpers.serving.server", "--port", port, "--model", model, "--threads", threads]
    for k, v in engine_kwargs.items():
        cmd += [f"--{k.replace('_', '-')}", v]
    env = {"OMP_NUM_THREADS": str(threads), "OMP_WAIT_POLICY": "passive",  # torch's OpenMP: as llama_server
           "PYTHONPATH": f"{ROOT}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    with serve(cmd, port=port, timeout=timeout, env=env, name=f"engine-{model}") as p:
        yield p
