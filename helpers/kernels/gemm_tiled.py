"""A tiled shared-memory FP32 GEMM (`kernels/gemm_tiled.cu`): c = a @ b with 16x16 tiles staged in shared
memory (CUDA C++ Programming Guide, "Shared Memory" matrix-multiplication example).

The naive kernel (one thread per c[i, j], reading a row of a and a column of b from global memory) loads
2k floats per output; with tiles each element of a and b is loaded once per block and reused TILE times
from shared memory, so global loads drop by TILE. Float32 accumulation: the result is within the
classic dot-product error bound gamma_k = k u / (1 - k u), u = 2^-24 (Higham, *Accuracy and Stability of
Numerical Algorithms*, §3.1) of the exact product — the tolerance `error_bound` returns.
"""
from __future__ import annotations

import numpy as np

from . import load
from .simulator import Report, launch

TILE = 16
F = np.float32


def reference(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """The exact product (float64), rounded once to float32."""
    return (np.asarray(a, np.float64) @ np.asarray(b, np.float64)).astype(np.float32)


def error_bound(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Elementwise bound on |float32 GEMM − reference|: (gamma_k + u) |a| @ |b| (any summation order, FMA or not)."""
    k, u = a.shape[1], 2.0 ** -24
    return (k * u / (1 - k * u) + u) * (np.abs(a.astype(np.float64)) @ np.abs(b.astype(np.float64)))


def gemm_tiled(t, a, b, c, m, n, k):
    """Line-for-line transcription of `gemm_tiled.cu` (`yield` = `__syncthreads()`)."""
    As = t.shared_array("as", (TILE, TILE))
    Bs = t.shared_array("bs", (TILE, TILE))
    row = t.blockIdx.y * TILE + t.threadIdx.y
    col = t.blockIdx.x * TILE + t.threadIdx.x
    acc = F(0.0)
    for k0 in range(0, k, TILE):
        ka = k0 + t.threadIdx.x
        kb = k0 + t.threadIdx.y
        As[t.threadIdx.y, t.threadIdx.x] = a[row * k + ka] if row < m and ka < k else F(0.0)
        Bs[t.threadIdx.y, t.threadIdx.x] = b[kb * n + col] if kb < k and col < n else F(0.0)
        yield  # __syncthreads()
        for kk in range(TILE):
            acc += As[t.threadIdx.y, kk] * Bs[kk, t.threadIdx.x]
        yield  # __syncthreads()
    if row < m and col < n:
        c[row * n + col] = acc


def launch_shape(m: int, n: int) -> tuple[tuple[int, int], tuple[int, int]]:
    """(grid, block): one 16x16 block per 16x16 tile of c; grid.x covers columns, grid.y rows."""
    return (-(-n // TILE), -(-m // TILE)), (TILE, TILE)


def _check(a, b):
    if a.ndim != 2 or b.ndim != 2 or a.shape[1] != b.shape[0] or 0 in a.shape + b.shape:
        raise ValueError(f"gemm needs a (m, k) and b (k, n), non-empty; got {a.shape} and {b.shape}")


def simulated(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, Report]:
    """(c, counts) of the simulated launch."""
    a, b = np.ascontiguousarray(a, np.float32), np.ascontiguousarray(b, np.float32)
    _check(a, b)
    (m, k), n = a.shape, b.shape[1]
    c = np.full((m, n), np.nan, np.float32)  # NaN: every element must be written
    grid, block = launch_shape(m, n)
    report = launch(gemm_tiled, grid, block, a, b, c, np.int32(m), np.int32(n), np.int32(k))
    return c, report


def on_gpu(a, b):
    """Launch the real kernel with CuPy; returns a cupy array."""
    import cupy as cp

    a, b = cp.ascontiguousarray(cp.asarray(a, cp.float32)), cp.ascontiguousarray(cp.asarray(b, cp.float32))
    _check(a, b)
    (m, k), n = a.shape, b.shape[1]
    c = cp.empty((m, n), cp.float32)
    grid, block = launch_shape(m, n)
    load("gemm_tiled")(grid, block, (a, b, c, np.int32(m), np.int32(n), np.int32(k)))
    return c
