"""The course's first kernel, `kernels/vector_add.cu`, three ways: NumPy reference, CPU simulation, GPU."""
from __future__ import annotations

import numpy as np

from . import load, simulate


def reference(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """What the kernel must compute."""
    return (np.asarray(a, np.float32) + np.asarray(b, np.float32)).astype(np.float32)


def kernel_py(t, a, b, out, n):
    """Line-for-line transcription of `vector_add.cu`."""
    i = t.blockIdx.x * t.blockDim.x + t.threadIdx.x
    if i < n:
        out[i] = a[i] + b[i]


def _check_inputs(a, b):
    if a.shape != b.shape or a.ndim != 1:
        raise ValueError(f"vector_add needs two 1-D arrays of one length, got {a.shape} and {b.shape}")


def grid_for(n: int, block: int) -> int:
    """Blocks needed to cover n elements: ceil(n / block)."""
    return max(1, (n + block - 1) // block)


def simulated(a: np.ndarray, b: np.ndarray, block: int = 256) -> np.ndarray:
    """Run the transcription over the same grid the GPU launch uses."""
    a, b = np.asarray(a, np.float32), np.asarray(b, np.float32)
    _check_inputs(a, b)
    out = np.full_like(a, np.nan)
    simulate(kernel_py, grid_for(a.size, block), block, a, b, out, a.size)
    return out


def on_gpu(a, b, block: int = 256):
    """Launch the real kernel with CuPy; `a`, `b` numpy or cupy float32 arrays. Returns a cupy array."""
    import cupy as cp

    a, b = cp.asarray(a, cp.float32), cp.asarray(b, cp.float32)
    _check_inputs(a, b)
    out = cp.empty_like(a)
    load("vector_add")((grid_for(a.size, block),), (block,), (a, b, out, np.int32(a.size)))
    return out
