"""helpers.serving.processes: servers always terminated (even when the with-block fails), failed start-ups explained."""
import os
import signal
import subprocess
import sys
import textwrap
import time
import urllib.request

import pytest

from helpers.serving import processes as pr

# A minimal server: answers 200 on /health, forks a child (so the whole process group must go), logs a line.
HEALTH_SERVER = textwrap.dedent("""
    import http.server, subprocess, sys
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    open(sys.argv[2], "w").write(str(child.pid))
    class H(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            self.send_response(200 if self.path == "/health" else 404)
            self.end_headers()
            self.wfile.write(b"ok")
        def log_message(self, *a):
            pass
    print("listening", flush=True)
    http.server.HTTPServer(("127.0.0.1", int(sys.argv[1])), H).serve_forever()
""")


def gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    # a zombie child of an exited parent is also gone for our purposes (it holds no port, runs nothing)
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(")")[-1].split()[0] == "Z"
    except OSError:
        return True


def wait_gone(pid: int, seconds: float = 3.0) -> bool:
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        if gone(pid):
            return True
        time.sleep(0.05)
    return gone(pid)


def test_free_port_is_bindable():
    import socket

    port = pr.free_port()
    with socket.socket() as s:
        s.bind(("127.0.0.1", port))


def test_serve_terminates_process_group_even_when_the_block_raises(tmp_path):
    port, child_file = pr.free_port(), tmp_path / "child.pid"
    with pytest.raises(RuntimeError, match="a failing cell"):
        with pr.serve([sys.executable, "-c", HEALTH_SERVER, port, child_file], port=port, timeout=20,
                      name="health") as p:
            with urllib.request.urlopen(p.url + "/health", timeout=5) as r:
                assert r.status == 200
            assert p.url == f"http://127.0.0.1:{port}" and p.alive()
            pid, child = p.pid, int(child_file.read_text())
            assert os.getpgid(child) == pid  # the child is in the server's process group
            raise RuntimeError("a failing cell")
    assert gone(pid)
    assert wait_gone(child), "the server's child outlived it"
    assert "listening" in p.log_tail()


def test_serve_reports_death_during_startup_with_log_tail():
    port = pr.free_port()
    cmd = [sys.executable, "-c", "print('model file not found: x.gguf'); import sys; sys.exit(3)"]
    t0 = time.monotonic()
    with pytest.raises(pr.ServerFailed, match=r"(?s)exited with 3.*model file not found"):
        with pr.serve(cmd, port=port, timeout=30, name="dies"):
            pass
    assert time.monotonic() - t0 < 10  # noticed at once, not after the timeout


def test_serve_times_out_and_kills_a_server_that_never_gets_healthy():
    port = pr.free_port()
    with pytest.raises(pr.ServerFailed, match="not healthy"):
        with pr.serve([sys.executable, "-c", "import time; print('loading', flush=True); time.sleep(60)"],
                      port=port, timeout=1, name="slow"):
            pass
    # the Process was never yielded, but the finally killed it: its port is free again
    import socket
    with socket.socket() as s:
        s.bind(("127.0.0.1", port))


def test_terminate_escalates_to_sigkill(tmp_path):
    # a server that ignores SIGTERM must still go: SIGKILL after the grace period
    script = ("import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); print('up', flush=True); "
              "time.sleep(60)")
    proc = subprocess.Popen([sys.executable, "-c", script], start_new_session=True, stdout=subprocess.PIPE)
    assert proc.stdout.readline().strip() == b"up"
    p = pr.Process("stubborn", 0, proc, tmp_path / "none.log")
    t0 = time.monotonic()
    pr.terminate(p, grace=0.5)
    assert proc.returncode == -signal.SIGKILL and time.monotonic() - t0 < 5


def test_kill_mid_test(tmp_path):
    port = pr.free_port()
    with pr.serve([sys.executable, "-c", HEALTH_SERVER, port, tmp_path / "c.pid"], port=port, timeout=20) as p:
        p.kill()
        assert not p.alive()
        with pytest.raises(OSError):
            urllib.request.urlopen(p.url + "/health", timeout=2)
    assert gone(p.pid)


@pytest.mark.slow
def test_serving_gguf_and_llama_server():
    """Builds (or finds) the Q8_0 file, serves it, and reads what the OpenAI endpoint returns."""
    import httpx

    from helpers.formats import gguf as G

    path = pr.serving_gguf("Q8_0")
    assert path.is_file() and not list(path.parent.glob(".build-*"))  # no half-written leftovers
    assert G.read(path).metadata["general.file_type"] == 7  # LLAMA_FTYPE_MOSTLY_Q8_0
    with pr.llama_server(path, parallel=2, ctx_size=1024, threads=1) as p:
        with httpx.Client(base_url=p.url, timeout=60) as c:
            body = {"prompt": "The capital of France is", "max_tokens": 4, "temperature": 0}
            first, second = c.post("/v1/completions", json=body).json(), c.post("/v1/completions", json=body).json()
            assert first["usage"]["completion_tokens"] == 4 and first["timings"]["cache_n"] == 0
            assert second["timings"]["cache_n"] > 0  # the same prompt again: its prefix is reused from the slot
            assert c.get("/metrics").status_code == 200
    assert gone(p.pid)
