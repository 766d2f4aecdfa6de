"""Coalesced vs strided copy (`kernels/copy_coalesced.cu`, `kernels/copy_strided.cu`): the same useful bytes,
up to 8x the memory traffic. NumPy reference, CPU simulation with counts, GPU launch.

A warp request's cost is the number of 32-byte sectors its 32 addresses fall in (CUDA C++ Best Practices
Guide, "Coalesced Access to Global Memory"): lanes reading consecutive float32 need 128 B = 4 sectors; with a
stride of s floats they span 128·s bytes, 4·s sectors, capped at 32 (one per lane) from s = 8 on.
"""
from __future__ import annotations

import numpy as np

from . import load
from .simulator import Report, launch
from .vector_add import grid_for


def reference(x: np.ndarray, stride: int = 1) -> np.ndarray:
    """What both kernels compute: every `stride`-th element of x (stride 1: a copy)."""
    return np.ascontiguousarray(np.asarray(x, np.float32)[::stride])


def copy_coalesced(t, x, out, n):
    """Line-for-line transcription of `copy_coalesced.cu`."""
    i = t.blockIdx.x * t.blockDim.x + t.threadIdx.x
    if i < n:
        out[i] = x[i]


def copy_strided(t, x, out, n, stride):
    """Line-for-line transcription of `copy_strided.cu`."""
    i = t.blockIdx.x * t.blockDim.x + t.threadIdx.x
    if i < n:
        out[i] = x[i * stride]


def _check(x, stride: int) -> None:
    if x.ndim != 1 or x.size == 0:
        raise ValueError(f"copy needs a non-empty 1-D array, got shape {x.shape}")
    if int(stride) < 1:
        raise ValueError(f"stride must be a positive int, got {stride}")


def simulated(x: np.ndarray, stride: int = 1, block: int = 256) -> tuple[np.ndarray, Report]:
    """(out, counts) of the simulated launch: `copy_coalesced` for stride 1, else `copy_strided`."""
    x = np.ascontiguousarray(x, np.float32)
    _check(x, stride)
    n = -(-x.size // stride)  # ceil: elements 0, stride, 2 stride, ... of x
    out = np.full(n, np.nan, np.float32)  # NaN: every element must be written
    if stride == 1:
        report = launch(copy_coalesced, grid_for(n, block), block, x, out, np.int32(n))
    else:
        report = launch(copy_strided, grid_for(n, block), block, x, out, np.int32(n), np.int32(stride))
    return out, report


def on_gpu(x, stride: int = 1, block: int = 256):
    """Launch the real kernel with CuPy; returns a cupy array."""
    import cupy as cp

    x = cp.ascontiguousarray(cp.asarray(x, cp.float32))
    _check(x, stride)
    n = -(-x.size // stride)
    out = cp.empty(n, cp.float32)
    if stride == 1:
        load("copy_coalesced")((grid_for(n, block),), (block,), (x, out, np.int32(n)))
    else:
        load("copy_strided")((grid_for(n, block),), (block,), (x, out, np.int32(n), np.int32(stride)))
    return out
