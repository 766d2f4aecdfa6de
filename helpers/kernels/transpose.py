"""Matrix transpose three ways (`kernels/transpose_{naive,shared,padded}.cu`): the classic lesson in
coalescing and shared-memory bank conflicts (M. Harris, "An Efficient Matrix Transpose in CUDA C/C++", 2013).

- naive: reads coalesced, writes one column of `out` per warp -> 32 sectors per store request.
- shared: stage a 32x32 tile in shared memory so both global accesses are coalesced; reading the tile by
  column puts all 32 lanes in one bank -> 32-way bank conflict.
- padded: the tile is 32x33, column j of row i lands in bank (i + j) % 32 -> conflict-free.
"""
from __future__ import annotations

import numpy as np

from . import load
from .simulator import Report, launch

TILE = 32
VARIANTS = ("naive", "shared", "padded")


def reference(x: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(np.asarray(x, np.float32).T)


def transpose_naive(t, x, out, rows, cols):
    """Line-for-line transcription of `transpose_naive.cu`."""
    c = t.blockIdx.x * t.blockDim.x + t.threadIdx.x
    r = t.blockIdx.y * t.blockDim.y + t.threadIdx.y
    if r < rows and c < cols:
        out[c * rows + r] = x[r * cols + c]


def transpose_shared(t, x, out, rows, cols):
    """Line-for-line transcription of `transpose_shared.cu` (a generator: `yield` is `__syncthreads()`)."""
    tile = t.shared_array("tile", (TILE, TILE))
    c = t.blockIdx.x * TILE + t.threadIdx.x
    r = t.blockIdx.y * TILE + t.threadIdx.y
    if r < rows and c < cols:
        tile[t.threadIdx.y, t.threadIdx.x] = x[r * cols + c]
    yield  # __syncthreads()
    c = t.blockIdx.y * TILE + t.threadIdx.x
    r = t.blockIdx.x * TILE + t.threadIdx.y
    if r < cols and c < rows:
        out[r * rows + c] = tile[t.threadIdx.x, t.threadIdx.y]


def transpose_padded(t, x, out, rows, cols):
    """Line-for-line transcription of `transpose_padded.cu`: transpose_shared with a 32x33 tile."""
    tile = t.shared_array("tile", (TILE, TILE + 1))
    c = t.blockIdx.x * TILE + t.threadIdx.x
    r = t.blockIdx.y * TILE + t.threadIdx.y
    if r < rows and c < cols:
        tile[t.threadIdx.y, t.threadIdx.x] = x[r * cols + c]
    yield  # __syncthreads()
    c = t.blockIdx.y * TILE + t.threadIdx.x
    r = t.blockIdx.x * TILE + t.threadIdx.y
    if r < cols and c < rows:
        out[r * rows + c] = tile[t.threadIdx.x, t.threadIdx.y]


KERNELS = {"naive": transpose_naive, "shared": transpose_shared, "padded": transpose_padded}


def launch_shape(rows: int, cols: int) -> tuple[tuple[int, int], tuple[int, int]]:
    """(grid, block): 32x32 threads per block, one per element; grid.x covers columns, grid.y rows."""
    return (-(-cols // TILE), -(-rows // TILE)), (TILE, TILE)


def _check(x, variant: str):
    if variant not in VARIANTS:
        raise ValueError(f"variant must be one of {VARIANTS}, got {variant!r}")
    if x.ndim != 2 or x.size == 0:
        raise ValueError(f"transpose needs a non-empty 2-D matrix, got shape {x.shape}")


def simulated(x: np.ndarray, variant: str = "padded") -> tuple[np.ndarray, Report]:
    """(out, counts) of the simulated launch of `transpose_<variant>`."""
    x = np.ascontiguousarray(x, np.float32)
    _check(x, variant)
    rows, cols = x.shape
    out = np.full((cols, rows), np.nan, np.float32)  # NaN: every element must be written
    grid, block = launch_shape(rows, cols)
    report = launch(KERNELS[variant], grid, block, x, out, np.int32(rows), np.int32(cols))
    return out, report


def on_gpu(x, variant: str = "padded"):
    """Launch the real `transpose_<variant>` with CuPy; returns a cupy array."""
    import cupy as cp

    x = cp.ascontiguousarray(cp.asarray(x, cp.float32))
    _check(x, variant)
    rows, cols = x.shape
    out = cp.empty((cols, rows), cp.float32)
    grid, block = launch_shape(rows, cols)
    load(f"transpose_{variant}")(grid, block, (x, out, np.int32(rows), np.int32(cols)))
    return out
