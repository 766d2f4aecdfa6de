import shutil

import numpy as np
import pytest

from helpers import kernels
from helpers.kernels import simulate, vector_add


def test_every_kernel_compiles_to_ptx():
    if not shutil.which("nvcc"):
        pytest.importorskip("cupy", reason="no nvcc and no CuPy: nothing can compile CUDA here")
    for name in kernels.names():
        ok, message = kernels.compile_check(name)
        assert ok, f"{name}: {message}"


def test_compile_check_reports_errors(tmp_path, monkeypatch):
    if not shutil.which("nvcc"):
        pytest.skip("needs nvcc")
    monkeypatch.setattr(kernels, "KERNELS", tmp_path)
    (tmp_path / "broken.cu").write_text('extern "C" __global__ void broken(float* x) { x[0] = undefined_name; }')
    ok, message = kernels.compile_check("broken")
    assert not ok and "undefined_name" in message


def test_nvrtc_path_compiles_every_kernel_and_reports_errors(tmp_path, monkeypatch):
    pytest.importorskip("cupy_backends.cuda.libs.nvrtc", reason="the `gpu` extra (CuPy + NVRTC) is not installed")
    for name in kernels.names():  # int4_dequant and w4a16_gemv include cuda_fp16.h: NVRTC needs its folder passed
        ok, message = kernels.compile_check(name, compiler="nvrtc")
        assert ok and "entries" in message, (name, message)
    monkeypatch.setattr(kernels, "KERNELS", tmp_path)
    (tmp_path / "broken.cu").write_text('extern "C" __global__ void broken(float* x) { x[0] = undefined_name; }')
    ok, message = kernels.compile_check("broken", compiler="nvrtc")
    assert not ok and "undefined_name" in message


def test_unknown_kernel():
    with pytest.raises(FileNotFoundError, match="vector_add"):
        kernels.source("nope")
    with pytest.raises(ValueError, match="compiler"):
        kernels.compile_check("vector_add", compiler="clang")


@pytest.mark.parametrize("n,block", [(1, 32), (1000, 128), (1024, 256), (1025, 256)])
def test_simulated_vector_add_matches_numpy(n, block):
    rng = np.random.default_rng(n)
    a, b = rng.standard_normal(n).astype(np.float32), rng.standard_normal(n).astype(np.float32)
    out = vector_add.simulated(a, b, block=block)  # NaN-filled: every element must be written exactly once
    assert np.array_equal(out, vector_add.reference(a, b))


def test_simulator_visits_every_thread_once():
    seen = []
    simulate(lambda t: seen.append((t.blockIdx.x, t.blockIdx.y, t.threadIdx.x, t.threadIdx.y)), (3, 2), (4, 2))
    assert len(seen) == len(set(seen)) == 3 * 2 * 4 * 2


def test_simulator_barriers_order_shared_memory():
    """A block-wide reversal through shared memory needs __syncthreads() between write and read."""

    def reverse(t, x, out):
        s = t.shared.setdefault("tile", np.zeros(t.blockDim.x))
        s[t.threadIdx.x] = x[t.threadIdx.x]
        yield  # __syncthreads()
        out[t.threadIdx.x] = s[t.blockDim.x - 1 - t.threadIdx.x]

    x, out = np.arange(8.0), np.zeros(8)
    simulate(reverse, 1, 8, x, out)
    assert out.tolist() == x[::-1].tolist()


def test_simulator_rejects_divergent_barriers():
    def bad(t):
        if t.threadIdx.x == 0:
            yield

    with pytest.raises(RuntimeError, match="different numbers of __syncthreads"):
        simulate(bad, 1, 4)


def test_bad_launch_and_inputs():
    with pytest.raises(ValueError):
        simulate(lambda t: None, 0, 32)
    with pytest.raises(ValueError, match="1-D arrays of one length"):
        vector_add.simulated(np.zeros(3), np.zeros(4))


@pytest.mark.gpu
def test_real_vector_add_on_gpu():
    cp = pytest.importorskip("cupy")
    rng = np.random.default_rng(0)
    for n in (1, 1000, 1 << 20):
        a, b = rng.standard_normal(n).astype(np.float32), rng.standard_normal(n).astype(np.float32)
        assert np.array_equal(cp.asnumpy(vector_add.on_gpu(a, b)), vector_add.reference(a, b))
