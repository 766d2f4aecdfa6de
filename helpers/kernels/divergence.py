"""Warp divergence (`kernels/divergent.cu`, `kernels/branch_free.cu`): even and odd elements follow two
different affine maps, iterated `iters` times. In `divergent` the condition splits every warp (lanes 2j and
2j+1), so each warp executes both loops, half its lanes idle each time; `branch_free` selects each lane's
coefficients and runs one loop. Same numbers, half the instructions issued per warp.

Transcriptions mark the CUDA `if`s with `t.branch(...)` so the simulator counts divergent warps; the
`c ? a : b` selects stay plain Python conditional expressions (a select instruction, not a jump).
"""
from __future__ import annotations

import numpy as np

from . import load
from .simulator import Report, launch
from .vector_add import grid_for

F = np.float32
EVEN = (F(0.5), F(1.0))     # v -> 0.5 v + 1     (fixed point 2)
ODD = (F(0.75), F(-0.25))   # v -> 0.75 v - 0.25 (fixed point -1)


def reference(x: np.ndarray, iters: int) -> np.ndarray:
    """Element i iterated `iters` times through EVEN's map if i is even, else ODD's, in float32."""
    v = np.array(x, np.float32)
    a = np.where(np.arange(v.size) % 2 == 0, EVEN[0], ODD[0]).astype(np.float32)
    b = np.where(np.arange(v.size) % 2 == 0, EVEN[1], ODD[1]).astype(np.float32)
    for _ in range(iters):
        v = v * a + b  # float32 multiply then add, rounded separately
    return v


def divergent(t, x, out, n, iters):
    """Line-for-line transcription of `divergent.cu`."""
    i = t.blockIdx.x * t.blockDim.x + t.threadIdx.x
    if t.branch(i < n):
        v = x[i]
        if t.branch(i % 2 == 0):
            for k in range(iters):
                v = v * F(0.5) + F(1.0)
        else:
            for k in range(iters):
                v = v * F(0.75) - F(0.25)
        out[i] = v


def branch_free(t, x, out, n, iters):
    """Line-for-line transcription of `branch_free.cu`."""
    i = t.blockIdx.x * t.blockDim.x + t.threadIdx.x
    if t.branch(i < n):
        even = i % 2 == 0
        a = F(0.5) if even else F(0.75)
        b = F(1.0) if even else F(-0.25)
        v = x[i]
        for k in range(iters):
            v = v * a + b
        out[i] = v


KERNELS = {"divergent": divergent, "branch_free": branch_free}


def _check(x, kernel: str, iters: int):
    if kernel not in KERNELS:
        raise ValueError(f"kernel must be one of {tuple(KERNELS)}, got {kernel!r}")
    if x.ndim != 1 or x.size == 0:
        raise ValueError(f"needs a non-empty 1-D array, got shape {x.shape}")
    if int(iters) < 0:
        raise ValueError(f"iters must be >= 0, got {iters}")


def simulated(x: np.ndarray, kernel: str = "divergent", iters: int = 4,
              block: int = 256) -> tuple[np.ndarray, Report]:
    """(out, counts) of the simulated launch of `kernel` ('divergent' or 'branch_free')."""
    x = np.ascontiguousarray(x, np.float32)
    _check(x, kernel, iters)
    out = np.full_like(x, np.nan)  # NaN: every element must be written
    report = launch(KERNELS[kernel], grid_for(x.size, block), block, x, out, np.int32(x.size), np.int32(iters))
    return out, report


def on_gpu(x, kernel: str = "divergent", iters: int = 4, block: int = 256):
    """Launch the real kernel with CuPy; returns a cupy array."""
    import cupy as cp

    x = cp.ascontiguousarray(cp.asarray(x, cp.float32))
    _check(x, kernel, iters)
    out = cp.empty_like(x)
    load(kernel)((grid_for(x.size, block),), (block,), (x, out, np.int32(x.size), np.int32(iters)))
    return out
