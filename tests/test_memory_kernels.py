"""The memory-lesson kernels (copy, transpose, divergence, tiled GEMM): simulation == NumPy reference at
awkward sizes, their counts match the closed forms, every .cu compiles, and (GPU lane) the real kernels agree."""
import shutil
import sys
import types

import numpy as np
import pytest

from helpers import kernels
from helpers.kernels import launch
from helpers.kernels import coalescing, divergence, gemm_tiled, transpose

MODULES = {coalescing: ("copy_coalesced", "copy_strided"),
           transpose: ("transpose_naive", "transpose_shared", "transpose_padded"),
           divergence: ("divergent", "branch_free"),
           gemm_tiled: ("gemm_tiled",)}


def test_every_kernel_has_its_transcription_and_compiles():
    names = [k for ks in MODULES.values() for k in ks]
    for module, ks in MODULES.items():
        for k in ks:
            assert callable(getattr(module, k)), f"{module.__name__} has no transcription {k}"
            assert f'extern "C" __global__ void {k}(' in kernels.source(k)
    if not shutil.which("nvcc"):
        pytest.importorskip("cupy", reason="no nvcc and no CuPy: nothing can compile CUDA here")
    for name in names:
        ok, message = kernels.compile_check(name)
        assert ok, f"{name}: {message}"


# -- simulation == reference (NaN-filled outputs: every element must be written) -------------------

@pytest.mark.parametrize("n", [1, 31, 1000, 1025])
@pytest.mark.parametrize("stride", [1, 2, 7])
def test_copy(n, stride):
    x = np.random.default_rng(n).standard_normal(n).astype(np.float32)
    out, _ = coalescing.simulated(x, stride, block=128)
    assert np.array_equal(out, coalescing.reference(x, stride))


@pytest.mark.parametrize("shape", [(1, 1), (32, 32), (33, 65), (40, 7)])
@pytest.mark.parametrize("variant", transpose.VARIANTS)
def test_transpose(shape, variant):
    x = np.random.default_rng(shape[0]).standard_normal(shape).astype(np.float32)
    out, _ = transpose.simulated(x, variant)
    assert np.array_equal(out, transpose.reference(x))


@pytest.mark.parametrize("n", [1, 100, 1025])
@pytest.mark.parametrize("iters", [0, 5])
def test_divergent_and_branch_free_agree_with_reference(n, iters):
    x = (4 * np.random.default_rng(n).standard_normal(n)).astype(np.float32)
    ref = divergence.reference(x, iters)
    for k in divergence.KERNELS:
        out, _ = divergence.simulated(x, k, iters, block=64)
        assert np.array_equal(out, ref), k


@pytest.mark.parametrize("m,k,n", [(1, 1, 1), (16, 16, 16), (20, 33, 17)])
def test_gemm_tiled_within_float32_bound(m, k, n):
    rng = np.random.default_rng(m * k * n)
    a, b = rng.standard_normal((m, k)).astype(np.float32), rng.standard_normal((k, n)).astype(np.float32)
    c, _ = gemm_tiled.simulated(a, b)
    assert not np.isnan(c).any()
    assert (np.abs(c - gemm_tiled.reference(a, b)) <= gemm_tiled.error_bound(a, b)).all()


def test_gemm_bound_catches_a_wrong_product():
    rng = np.random.default_rng(0)
    a, b = rng.standard_normal((8, 24)).astype(np.float32), rng.standard_normal((24, 8)).astype(np.float32)
    wrong = (a[:, :-1] @ b[:-1]).astype(np.float32)  # one term of k missing
    assert not (np.abs(wrong - gemm_tiled.reference(a, b)) <= gemm_tiled.error_bound(a, b)).all()
    assert (gemm_tiled.error_bound(a, b) < 1e-4 * (np.abs(a) @ np.abs(b))).all()  # and it is tight


def test_bad_inputs():
    with pytest.raises(ValueError, match="1-D"):
        coalescing.simulated(np.zeros((2, 2)))
    with pytest.raises(ValueError, match="stride"):
        coalescing.simulated(np.zeros(4), stride=0)
    with pytest.raises(ValueError, match="variant"):
        transpose.simulated(np.zeros((2, 2)), "fast")
    with pytest.raises(ValueError, match="2-D"):
        transpose.simulated(np.zeros(4))
    with pytest.raises(ValueError, match="kernel must be"):
        divergence.simulated(np.zeros(4), "nope")
    with pytest.raises(ValueError, match=r"\(m, k\)"):
        gemm_tiled.simulated(np.zeros((2, 3)), np.zeros((2, 3)))


# -- the counts each kernel teaches ----------------------------------------------------------------

def test_copy_counts():
    x = np.zeros(8 * 1024, np.float32)
    for stride, sectors in [(1, 4), (2, 8), (4, 16), (8, 32)]:
        _, r = coalescing.simulated(x, stride)
        assert (r.sectors_per_load, r.sectors_per_store) == (sectors, 4)


def test_transpose_counts():
    x = np.zeros((64, 64), np.float32)
    warps = 4 * 32  # 4 blocks of 32x32 threads
    _, naive = transpose.simulated(x, "naive")
    assert (naive.sectors_per_load, naive.sectors_per_store, naive.shared_requests) == (4, 32, 0)
    _, shared = transpose.simulated(x, "shared")
    assert (shared.sectors_per_load, shared.sectors_per_store) == (4, 4)  # both coalesced now
    assert shared.bank_conflicts == warps * 31 and shared.max_ways == 32  # ... but the column read is 32-way
    _, padded = transpose.simulated(x, "padded")
    assert (padded.sectors_per_store, padded.bank_conflicts, padded.max_ways) == (4, 0, 1)


def test_divergence_counts():
    x = np.zeros(512, np.float32)
    _, r = divergence.simulated(x, "divergent")
    assert r.divergent_branches == 512 // 32
    _, r = divergence.simulated(x, "branch_free")
    assert r.divergent_branches == 0


def test_gemm_tiling_cuts_global_loads_by_tile():
    m = n = k = 32
    _, r = gemm_tiled.simulated(np.zeros((m, k), np.float32), np.zeros((k, n), np.float32))
    # naive GEMM: every output loads a row of a and a column of b = 2 k floats; tiled: 2 k / TILE
    assert r.load_bytes == 2 * m * n * k * 4 // gemm_tiled.TILE
    assert r.sectors_per_load == 4 and r.load_efficiency == 1.0  # a warp = 2 rows of 16 floats = 2 x 64 B
    assert r.bank_conflicts == 0                                 # as: broadcast, bs: one row


def test_on_gpu_host_code_with_cupy_faked_by_numpy_and_the_kernel_by_its_transcription(monkeypatch):
    """Each `on_gpu` runs its host code (shapes, grid, block, argument order) with CuPy replaced by NumPy
    and every RawKernel replaced by `launch` of the transcription of the same name."""
    fake_cupy = types.SimpleNamespace(
        float32=np.float32, asarray=lambda x, dtype=None: np.asarray(x, dtype), ascontiguousarray=np.ascontiguousarray,
        empty=lambda shape, dtype=None: np.full(shape, np.nan, dtype), empty_like=lambda a: np.full_like(a, np.nan))
    monkeypatch.setitem(sys.modules, "cupy", fake_cupy)
    for module, names in MODULES.items():
        transcriptions = {k: getattr(module, k) for k in names}
        monkeypatch.setattr(module, "load", lambda name, ts=transcriptions: (
            lambda grid, block, args: launch(ts[name], grid, block, *args)))
    rng = np.random.default_rng(4)
    x = rng.standard_normal(300).astype(np.float32)
    for stride in (1, 3):
        assert np.array_equal(coalescing.on_gpu(x, stride, block=64), coalescing.reference(x, stride))
    for k in divergence.KERNELS:
        assert np.array_equal(divergence.on_gpu(x, k, 3, block=64), divergence.reference(x, 3))
    m = rng.standard_normal((33, 40)).astype(np.float32)
    for variant in transpose.VARIANTS:
        assert np.array_equal(transpose.on_gpu(m, variant), transpose.reference(m))
    a, b = m[:, :20].copy(), m[:20, :17].copy()
    assert (np.abs(gemm_tiled.on_gpu(a, b) - gemm_tiled.reference(a, b)) <= gemm_tiled.error_bound(a, b)).all()


# -- the real kernels ------------------------------------------------------------------------------

@pytest.mark.gpu
def test_copy_on_gpu():
    cp = pytest.importorskip("cupy")
    x = np.random.default_rng(0).standard_normal(1 << 20 | 3).astype(np.float32)
    for stride in (1, 2, 8, 32):
        assert np.array_equal(cp.asnumpy(coalescing.on_gpu(x, stride)), coalescing.reference(x, stride))


@pytest.mark.gpu
def test_transpose_on_gpu():
    cp = pytest.importorskip("cupy")
    for shape in [(1, 1), (33, 65), (1024, 4096 + 7)]:
        x = np.random.default_rng(1).standard_normal(shape).astype(np.float32)
        for variant in transpose.VARIANTS:
            assert np.array_equal(cp.asnumpy(transpose.on_gpu(x, variant)), transpose.reference(x)), variant


@pytest.mark.gpu
def test_divergence_on_gpu():
    cp = pytest.importorskip("cupy")
    x = (4 * np.random.default_rng(2).standard_normal(1 << 20 | 5)).astype(np.float32)
    ref = divergence.reference(x, 16)
    for k in divergence.KERNELS:
        # nvcc contracts v * a + b into one FMA (one rounding instead of two): equal to ~1e-6, not bit for bit
        np.testing.assert_allclose(cp.asnumpy(divergence.on_gpu(x, k, 16)), ref, rtol=1e-5, atol=1e-5, err_msg=k)


@pytest.mark.gpu
def test_gemm_tiled_on_gpu():
    cp = pytest.importorskip("cupy")
    rng = np.random.default_rng(3)
    for m, k, n in [(1, 1, 1), (20, 33, 17), (512, 768, 256)]:
        a, b = rng.standard_normal((m, k)).astype(np.float32), rng.standard_normal((k, n)).astype(np.float32)
        c = cp.asnumpy(gemm_tiled.on_gpu(a, b))
        assert (np.abs(c - gemm_tiled.reference(a, b)) <= gemm_tiled.error_bound(a, b)).all()
