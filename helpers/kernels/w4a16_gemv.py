"""W4A16 GEMV (`kernels/w4a16_gemv.cu`): y = W x with 4-bit weights, float16 activations, float32 sums.

At batch 1 (LLM decoding) a linear layer is a matrix-vector product: each weight is read once and used
once, so its time is bytes / bandwidth, and 4-bit weights (plus one scale per group) move ~4x fewer bytes
than float16 weights. One warp per output row; each lane reads 32-bit words (8 codes) of the row, so a warp
reads 128 consecutive bytes per step (coalesced), dequantizes in registers, keeps a float32 partial sum,
and the warp adds its 32 partial sums with `__shfl_down_sync` (offsets 16, 8, 4, 2, 1).

Reference: dequantize (helpers.kernels.int4_dequant, i.e. helpers.quant) then a float32 NumPy matmul.
The kernel cannot match it bit for bit (another summation order, FMA on the GPU); `error_bound` gives the
a-priori tolerance per row: float16 rounding of x (relative 2^-11, when x is not float16 already) plus
float32 rounding of both computations, (K + 2) · 2^-24 each, all relative to Σ_k |ŵ_k x_k|.
"""
from __future__ import annotations

import numpy as np

from . import launch, load, shfl_down
from .int4_dequant import Int4Weight, check_group_size, int32, quantize_weight
from .int4_dequant import reference as dequantize_reference

WARP = 32
HALF8 = np.dtype([("h", np.float16, (8,))])  # a float4 load: 8 halves, 16 bytes


def reference(wq: Int4Weight, x) -> np.ndarray:
    """Dequantize-then-matmul in float32: (rows,)."""
    return dequantize_reference(wq) @ np.asarray(x, np.float32)


def error_bound(wq: Int4Weight, x) -> np.ndarray:
    """Per-row tolerance between the kernel (x in float16, float32 sums) and `reference` (see module doc)."""
    x = np.asarray(x)
    w = np.abs(dequantize_reference(wq).astype(np.float64))                         # (rows, cols)
    mass = w @ np.abs(x.astype(np.float64))                                          # Σ_k |ŵ_k x_k|
    u32, k = 2.0 ** -24, wq.cols
    bound = 2 * (k + 2) * u32 * mass
    if x.dtype != np.float16:                                      # the kernel sees x rounded to float16
        bound += 2.0 ** -11 * mass + 2.0 ** -25 * w.sum(axis=1)    # relative, and subnormal spacing
    return 1.01 * bound


def kernel_py(t, packed, scales, zeros, x, y, rows, cols, group_size, is_signed):
    """Line-for-line transcription of `w4a16_gemv.cu` (packed: uint32 words; x: 16-byte `HALF8` items)."""
    lane = t.threadIdx.x % WARP
    row = t.blockIdx.x * (t.blockDim.x // WARP) + t.threadIdx.x // WARP     # this warp's row
    words = cols // 8
    groups = (cols + group_size - 1) // group_size
    acc = np.float32(0.0)
    if t.branch(row < rows):              # no early return: every lane must reach the shuffles below
        for w in range(lane, words, WARP):
            word = int(packed[row * words + w])
            x8 = x[w]                                                       # x[8w .. 8w+7], one 16-byte load
            xh = x8["h"]
            g = row * groups + (8 * w) // group_size
            s = scales[g]
            z = int(zeros[g])
            part = np.float32(0.0)
            for j in range(0, 8, 2):
                x0, x1 = np.float32(xh[j]), np.float32(xh[j + 1])           # __half22float2
                q0 = int32(word << (28 - 4 * j)) >> 28 if is_signed else (word >> (4 * j)) & 0xF
                q1 = int32(word << (24 - 4 * j)) >> 28 if is_signed else (word >> (4 * j + 4)) & 0xF
                part += np.float32(q0 - z) * x0
                part += np.float32(q1 - z) * x1
            acc += s * part               # the group's scale once per 8 products
    offset = WARP // 2
    while offset > 0:                     # 16, 8, 4, 2, 1: lane l adds lane l + offset's sum
        acc += (yield shfl_down(acc, offset))
        offset //= 2
    if t.branch(row < rows and lane == 0):
        y[row] = acc                      # lane 0 holds the sum of all 32 lanes


def _check(wq: Int4Weight, x, block: int) -> np.ndarray:
    if not isinstance(wq, Int4Weight):
        raise TypeError(f"expected an Int4Weight (see int4_dequant.quantize_weight), got {type(wq).__name__}")
    if wq.cols % 8:
        raise ValueError(f"the GEMV reads 8 codes (one 32-bit word) at a time: cols must be a multiple of 8, "
                         f"got {wq.cols}")
    check_group_size(wq.cols, wq.group_size, multiple=8)
    if tuple(np.shape(x)) != (wq.cols,):
        raise ValueError(f"x must be a vector of length cols = {wq.cols}, got shape {np.shape(x)}")
    if not isinstance(block, int) or block % WARP or not WARP <= block <= 1024:
        raise ValueError(f"block must be a multiple of {WARP} threads (whole warps) up to 1024, got {block!r}")
    return x


def grid_for(rows: int, block: int) -> int:
    """One warp per row, block // 32 rows per block."""
    return max(1, -(-rows // (block // WARP)))


def simulated(wq: Int4Weight, x, block: int = 128, report: bool = False):
    """Run the transcription over the GPU launch's grid: y (rows,) float32 (and the simulator's report)."""
    _check(wq, x, block)
    x16 = np.ascontiguousarray(x, np.float16).view(HALF8)                  # (cols / 8,) 16-byte items
    packed = np.ascontiguousarray(wq.packed).view("<u4").reshape(-1)       # little-endian words, like the GPU
    y = np.full(wq.rows, np.nan, np.float32)
    rep = launch(kernel_py, grid_for(wq.rows, block), block, packed, wq.scales.reshape(-1),
                 wq.zeros.reshape(-1), x16, y, wq.rows, wq.cols, wq.group_size, int(wq.signed))
    return (y, rep) if report else y


def to_device(wq: Int4Weight) -> tuple:
    """The kernel's weight arguments as cupy arrays: packed uint32 words, scales, zero-points."""
    import cupy as cp

    return (cp.asarray(np.ascontiguousarray(wq.packed).view("<u4")), cp.asarray(wq.scales), cp.asarray(wq.zeros))


def on_gpu(wq: Int4Weight, x, block: int = 128, weights: tuple | None = None):
    """Launch the real kernel with CuPy; x numpy or cupy (cols,); `weights`: `to_device(wq)`, to copy the
    weight once for many calls. Returns y, a cupy float32 array (rows,)."""
    import cupy as cp

    _check(wq, x, block)
    packed, scales, zeros = weights or to_device(wq)
    x = cp.ascontiguousarray(cp.asarray(x, cp.float16))
    if x.data.ptr % 16:
        x = x.copy()                                               # the kernel reads x in 16-byte loads
    y = cp.empty(wq.rows, cp.float32)
    load("w4a16_gemv")((grid_for(wq.rows, block),), (block,),
                       (packed, scales, zeros, x, y, np.int32(wq.rows), np.int32(wq.cols),
                        np.int32(wq.group_size), np.int32(wq.signed)))
    return y


def _per_launch_us(launch_once, repeats: int, stream, event, elapsed_ms) -> tuple[float, str]:
    """µs per launch of `repeats` back-to-back launches on `stream`, captured in a CUDA graph when possible
    (a ~3 µs kernel is shorter than the host's launch overhead: a plain loop would time the host)."""
    for _ in range(3):
        launch_once()                                              # warm-up: compile, cuBLAS workspace
    stream.synchronize()
    try:
        replay, how = _graph(launch_once, repeats, stream), "CUDA graph"
    except Exception:                                              # noqa: BLE001 - any capture failure: time a loop
        stream.synchronize()
        replay, how = (lambda: [launch_once() for _ in range(repeats)]), "launch loop"
    replay()
    start, stop = event(), event()
    start.record(stream)
    replay()
    stop.record(stream)
    stop.synchronize()
    return elapsed_ms(start, stop) * 1e3 / repeats, how


def weight_copies(nbytes: int, cold: bool = True) -> int:
    """How many copies of an `nbytes` weight a benchmark rotates through so that one pass over them reads more than
    3× the GPU's L2 cache: then every launch reads its weight from HBM, as each layer of a decoding LLM does (a 4096²
    float16 matrix is 32 MiB and would otherwise stay in an H100/H200's 50–60 MB L2). 1 when not `cold`."""
    if not cold:
        return 1
    import cupy as cp

    return max(1, -(-3 * cp.cuda.Device().attributes["L2CacheSize"] // nbytes))


def benchmark(rows: int = 4096, cols: int = 4096, group_size: int = 128, repeats: int = 200, seed: int = 0,
              cold: bool = True) -> dict:
    """The kernel against a float16 GEMV of the same shape (torch on CUDA, else CuPy's cuBLAS), each timed with
    CUDA events over `repeats` launches in a CUDA graph, each launch on the next of `weight_copies` copies of its
    weight (`cold`: from HBM, not L2). Returns µs per call, speed-up and achieved GB/s."""
    import itertools

    import cupy as cp

    rng = np.random.default_rng(seed)
    w = rng.standard_normal((rows, cols), dtype=np.float32)
    x = rng.standard_normal(cols, dtype=np.float32).astype(np.float16)
    wq = quantize_weight(w, group_size)
    x_d, y_d = cp.asarray(x), cp.empty(rows, cp.float32)
    k4, k16 = weight_copies(wq.nbytes(), cold), weight_copies(2 * rows * cols, cold)
    arg_sets = itertools.cycle([(*to_device(wq), x_d, y_d, np.int32(rows), np.int32(cols), np.int32(group_size),
                                 np.int32(wq.signed)) for _ in range(k4)])
    kernel, grid = load("w4a16_gemv"), (grid_for(rows, 128),)
    stream = cp.cuda.Stream(non_blocking=True)
    with stream:
        ours, how = _per_launch_us(lambda: kernel(grid, (128,), next(arg_sets)), repeats, stream, cp.cuda.Event,
                                   cp.cuda.get_elapsed_time)
    try:
        import torch

        from ..device import device
        if not torch.cuda.is_available():
            raise ImportError("torch has no CUDA here")
        w16 = itertools.cycle([torch.from_numpy(w).half().to(device()) for _ in range(k16)])
        x16, y16 = torch.from_numpy(x).to(device()), torch.empty(rows, dtype=torch.float16, device=device())
        ts = torch.cuda.Stream()
        with torch.cuda.stream(ts):
            theirs, _ = _per_launch_us(lambda: torch.mv(next(w16), x16, out=y16), repeats, ts,
                                       lambda: torch.cuda.Event(enable_timing=True), lambda a, b: a.elapsed_time(b))
        baseline = f"torch {torch.__version__} float16 torch.mv"
    except ImportError:
        w16 = itertools.cycle([cp.asarray(w.astype(np.float16)) for _ in range(k16)])
        y16 = cp.empty(rows, cp.float16)
        with stream:
            theirs, _ = _per_launch_us(lambda: cp.matmul(next(w16), x_d, out=y16), repeats, stream, cp.cuda.Event,
                                       cp.cuda.get_elapsed_time)
        baseline = "cupy (cuBLAS) float16 matmul"
    return {"device": cp.cuda.runtime.getDeviceProperties(0)["name"].decode(), "shape": [rows, cols],
            "group_size": group_size, "w4a16_us": ours, "fp16_us": theirs, "baseline": baseline, "timing": how,
            "weight_copies": [k4, k16], "speedup": theirs / ours,
            "w4a16_GBps": (wq.nbytes() + 2 * cols + 4 * rows) / ours / 1e3,
            "fp16_GBps": (2 * rows * cols + 4 * cols) / theirs / 1e3}


def _graph(launch_once, repeats: int, stream):
    """`repeats` launches captured on `stream` into a graph; returns a function that replays it."""
    if hasattr(stream, "begin_capture"):                           # CuPy
        stream.begin_capture()
        try:
            for _ in range(repeats):
                launch_once()
        finally:
            graph = stream.end_capture()
        return lambda: graph.launch(stream)
    import torch                                                   # torch

    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph, stream=stream):
        for _ in range(repeats):
            launch_once()
    return graph.replay
