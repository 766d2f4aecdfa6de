"""W4A16 GEMV in Triton: the kernel of `w4a16_gemv.py` / `kernels/w4a16_gemv.cu`, written per block of a tensor.

CUDA C says what each *thread* does; Triton (triton-lang.org, the language of vLLM's and many quantization
libraries' kernels) says what each *program* does to a block of values, and its compiler picks the threads,
vector loads and shuffles. One program computes BLOCK_R output rows: it walks the row's packed bytes BLOCK_B at a
time (byte b holds columns 2b in its low nibble and 2b + 1 in its high nibble), unpacks both nibbles with shifts and
masks, dequantizes with the group's scale and zero-point, multiplies by float16 activations widened to float32, and
keeps one float32 partial sum per row; `tl.sum` is the warp reduction the CUDA kernel writes by hand.

Runs on a CUDA GPU, or on this CPU with Triton's interpreter: `TRITON_INTERPRET=1` set *before* `import triton`
executes the same kernel with NumPy on CPU tensors (slow, but every load, mask and sum is the real program's).
The tolerance against `w4a16_gemv.reference` is that kernel's a-priori `error_bound` (another summation order).
Needs the `triton` package (the course's `gpu` extra, about 1 GB).
"""
from __future__ import annotations

import numpy as np
import torch
import triton
import triton.language as tl

from .int4_dequant import Int4Weight, check_group_size


@triton.jit
def w4a16_gemv_kernel(packed_ptr, scales_ptr, zeros_ptr, x_ptr, y_ptr, rows, cols, groups, group_size,
                      SIGNED: tl.constexpr, BLOCK_R: tl.constexpr, BLOCK_B: tl.constexpr):
    half = cols // 2                                                   # packed bytes per row
    r = tl.program_id(0) * BLOCK_R + tl.arange(0, BLOCK_R)             # (BLOCK_R,) this program's rows
    r_ok = r < rows
    acc = tl.zeros((BLOCK_R,), dtype=tl.float32)
    for b0 in range(0, half, BLOCK_B):
        b = b0 + tl.arange(0, BLOCK_B)                                 # (BLOCK_B,) bytes = column pairs (2b, 2b+1)
        b_ok = b < half
        ok = r_ok[:, None] & b_ok[None, :]                             # (BLOCK_R, BLOCK_B)
        byte = tl.load(packed_ptr + r[:, None] * half + b[None, :], mask=ok, other=0).to(tl.int32)
        lo = byte & 0xF                                                # column 2b
        hi = (byte >> 4) & 0xF                                         # column 2b + 1
        if SIGNED:                                                     # two's-complement nibbles: -8 .. 7
            lo = (lo ^ 8) - 8
            hi = (hi ^ 8) - 8
        g = r[:, None] * groups + (2 * b[None, :]) // group_size       # both columns of a byte share a group
        s = tl.load(scales_ptr + g, mask=ok, other=0.0)                # (BLOCK_R, BLOCK_B) float32
        z = tl.load(zeros_ptr + g, mask=ok, other=0).to(tl.int32)
        x0 = tl.load(x_ptr + 2 * b, mask=b_ok, other=0.0).to(tl.float32)        # (BLOCK_B,) float16 -> float32
        x1 = tl.load(x_ptr + 2 * b + 1, mask=b_ok, other=0.0).to(tl.float32)
        acc += tl.sum((lo - z).to(tl.float32) * s * x0[None, :] + (hi - z).to(tl.float32) * s * x1[None, :], axis=1)
    tl.store(y_ptr + r, acc, mask=r_ok)


def to_device(wq: Int4Weight, device) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The kernel's weight arguments as tensors on `device`: packed bytes, scales, zero-points."""
    return (torch.from_numpy(np.ascontiguousarray(wq.packed)).to(device),
            torch.from_numpy(np.ascontiguousarray(wq.scales, np.float32)).to(device),
            torch.from_numpy(np.ascontiguousarray(wq.zeros, np.int8)).to(device))


def gemv(wq: Int4Weight, x: torch.Tensor, block_rows: int = 16, block_bytes: int = 64,
         weights: tuple | None = None) -> torch.Tensor:
    """y = dequantize(wq) @ x, (rows,) float32, by the Triton kernel on x's device (CPU: interpreter only).

    x: (cols,) activations (cast to float16, as the CUDA kernel reads them); `weights`: `to_device(wq, device)`,
    to copy the weight once for many calls."""
    if not isinstance(wq, Int4Weight):
        raise TypeError(f"expected an Int4Weight (see int4_dequant.quantize_weight), got {type(wq).__name__}")
    check_group_size(wq.cols, wq.group_size, multiple=2)
    if tuple(x.shape) != (wq.cols,):
        raise ValueError(f"x must be a vector of length cols = {wq.cols}, got shape {tuple(x.shape)}")
    for name, v in (("block_rows", block_rows), ("block_bytes", block_bytes)):
        if v < 1 or v & (v - 1):
            raise ValueError(f"{name} must be a power of two (a Triton block shape), got {v!r}")
    packed, scales, zeros = weights or to_device(wq, x.device)
    x16 = x.to(torch.float16).contiguous()
    y = torch.empty(wq.rows, dtype=torch.float32, device=x.device)
    grid = (triton.cdiv(wq.rows, block_rows),)
    w4a16_gemv_kernel[grid](packed, scales, zeros, x16, y, wq.rows, wq.cols, wq.groups, wq.group_size,
                            SIGNED=bool(wq.signed), BLOCK_R=block_rows, BLOCK_B=block_bytes)
    return y
