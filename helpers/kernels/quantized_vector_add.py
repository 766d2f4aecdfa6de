"""Capstone: `quantized_vector_add_kernel` (`kernels/quantized_vector_add.cu`) — INT8 c = a + b, three ways.

a and b are INT8 codes with their own per-tensor scale and zero-point (helpers.quant `QParams`); the sum
is requantized to INT8 with the output's scale and zero-point and saturated to [-128, 127]:

    c_q = clamp(rint((s_a (a_q - z_a) + s_b (b_q - z_b)) · (1 / s_c)) + z_c, -128, 127)

which is exactly `pc.quantize(pa.dequantize(a_q) + pb.dequantize(b_q))`, the CPU reference of Step 1.
Bit for bit on every path: each float operation is a single float32 operation rounded to nearest even,
done in the reference's order (two products, one sum, one product by the reciprocal; `__fmul_rn` /
`__fadd_rn` on the GPU so nothing is fused into an FMA), halves round to even (`rintf` = `torch.round`), and
1 / s_c is the very float32 the reference uses, computed once on the host.
"""
from __future__ import annotations

import numpy as np
import torch

from ..quant.affine import QParams
from . import launch, load

QMIN, QMAX = -128, 127


def per_tensor(qp: QParams, name: str) -> tuple[np.float32, int]:
    """(scale, zero_point) of a per-tensor signed 8-bit `QParams`, as the kernel takes them."""
    if not isinstance(qp, QParams):
        raise TypeError(f"{name}: expected helpers.quant QParams, got {type(qp).__name__}")
    if qp.bits != 8 or not qp.signed or qp.scale.numel() != 1:
        raise ValueError(f"{name}: the kernel takes per-tensor signed 8-bit parameters (QSpec(bits=8, signed=True)), "
                         f"got bits={qp.bits}, signed={qp.signed}, {qp.scale.numel()} scales")
    return np.float32(qp.scale.reshape(())), int(qp.zero_point.reshape(()))


def inverse_scale(qp: QParams) -> np.float32:
    """1 / s in float32, computed exactly as `QParams.quantize` does (`1.0 / s` on a float32 tensor)."""
    return np.float32((1.0 / qp.scale.reshape(())).item())


def _codes(q, name: str) -> np.ndarray:
    q = q.numpy() if isinstance(q, torch.Tensor) else np.asarray(q)
    if q.dtype != np.int8:
        raise TypeError(f"{name} must hold int8 codes, got {q.dtype} (quantize first: QParams.quantize(x).to(torch.int8))")
    if q.ndim != 1:
        raise ValueError(f"{name} must be 1-D, got shape {q.shape}")
    return np.ascontiguousarray(q)


def _check(qa, qb, block: int) -> tuple[np.ndarray, np.ndarray]:
    a, b = _codes(qa, "a"), _codes(qb, "b")
    if a.shape != b.shape or a.size == 0:
        raise ValueError(f"a and b must be non-empty and of one length, got {a.shape} and {b.shape}")
    if not isinstance(block, int) or not 1 <= block <= 1024:
        raise ValueError(f"block must be an int in 1..1024 threads, got {block!r}")
    return a, b


def reference(qa, qb, pa: QParams, pb: QParams, pc: QParams) -> np.ndarray:
    """The CPU reference: quantize(dequantize(a) + dequantize(b)) with helpers.quant, int8 codes."""
    a, b = _check(qa, qb, 1)
    for qp, name in ((pa, "pa"), (pb, "pb"), (pc, "pc")):
        per_tensor(qp, name)
    x = pa.dequantize(torch.from_numpy(a)) + pb.dequantize(torch.from_numpy(b))    # float32
    return pc.quantize(x).to(torch.int8).numpy()


def kernel_py(t, a, b, out, n, scale_a, zero_a, scale_b, zero_b, inv_scale_out, zero_out):
    """Line-for-line transcription of `quantized_vector_add_kernel` (float32 numpy scalars round like the GPU)."""
    i = t.blockIdx.x * t.blockDim.x + t.threadIdx.x
    if t.branch(i < n):
        qa = int(a[i]) - zero_a                                   # int32 intermediates: exact
        qb = int(b[i]) - zero_b
        total = np.float32(qa) * scale_a + np.float32(qb) * scale_b   # __fadd_rn(__fmul_rn, __fmul_rn)
        q = np.rint(total * inv_scale_out) + np.float32(zero_out)     # round half to even
        q = min(max(q, np.float32(QMIN)), np.float32(QMAX))           # saturate to int8
        out[i] = int(q)                                               # (signed char)q


def _args(pa, pb, pc):
    (sa, za), (sb, zb), (_, zc) = per_tensor(pa, "pa"), per_tensor(pb, "pb"), per_tensor(pc, "pc")
    return sa, za, sb, zb, inverse_scale(pc), zc


def grid_for(n: int, block: int) -> int:
    return max(1, -(-n // block))


def simulated(qa, qb, pa: QParams, pb: QParams, pc: QParams, block: int = 256, out: np.ndarray | None = None,
              report: bool = False):
    """Run the transcription over the GPU launch's grid; int8 codes (n,). `out`: an int8 array to write into
    (pre-fill it with values that differ from the expected ones to check every element is written)."""
    a, b = _check(qa, qb, block)
    sa, za, sb, zb, inv_c, zc = _args(pa, pb, pc)
    if out is None:
        out = np.zeros(a.size, np.int8)
    elif out.dtype != np.int8 or out.shape != a.shape or not out.flags.c_contiguous:
        raise ValueError(f"out must be a contiguous int8 array of shape {a.shape}")
    rep = launch(kernel_py, grid_for(a.size, block), block, a, b, out, a.size, sa, za, sb, zb, inv_c, zc)
    return (out, rep) if report else out


def on_gpu(qa, qb, pa: QParams, pb: QParams, pc: QParams, block: int = 256) -> np.ndarray:
    """Host orchestration (Step 3): allocate device memory, copy a and b to the GPU, launch, check for
    errors, copy the result back. Returns int8 codes (n,) on the host."""
    import cupy as cp

    a, b = _check(qa, qb, block)
    sa, za, sb, zb, inv_c, zc = _args(pa, pb, pc)
    a_d, b_d = cp.empty(a.size, cp.int8), cp.empty(b.size, cp.int8)   # allocation (cudaMalloc)
    out_d = cp.empty(a.size, cp.int8)
    a_d.set(a)                                                         # host → device (cudaMemcpy)
    b_d.set(b)
    kernel = load("quantized_vector_add", "quantized_vector_add_kernel")
    try:
        kernel((grid_for(a.size, block),), (block,),
               (a_d, b_d, out_d, np.int32(a.size), sa, np.int32(za), sb, np.int32(zb), inv_c, np.int32(zc)))
        cp.cuda.get_current_stream().synchronize()                     # launch errors surface here
    except (cp.cuda.driver.CUDADriverError, cp.cuda.runtime.CUDARuntimeError) as err:
        raise RuntimeError(f"quantized_vector_add_kernel failed (grid {grid_for(a.size, block)}, block {block}): "
                           f"{err}") from err
    return out_d.get()                                                 # device → host (cudaMemcpy)
