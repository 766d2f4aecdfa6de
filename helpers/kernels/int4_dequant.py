"""INT4 unpack + dequantize (`kernels/int4_dequant.cu`, Exercise 5): NumPy reference, CPU simulation, GPU.

A 4-bit weight matrix W (rows, cols) is stored as helpers.quant's `pack_int4` layout — two codes per byte,
column 2j in the low nibble of byte j, column 2j+1 in the high nibble — plus one float32 scale and one
zero-point per `group_size` consecutive columns of a row (1.1's per-group `QSpec`, axis 1, the input dimension):

    w[r, c] = (q[r, c] - z[r, c // group_size]) · s[r, c // group_size]

Two code conventions, both from helpers.quant: `signed` (symmetric, z = 0, codes in [-8, 7] in two's
complement — the kernel sign-extends a nibble with two shifts, `(int)(byte << 28) >> 28`) and unsigned
(asymmetric, codes in [0, 15] with a zero-point, as GPTQ and AWQ checkpoints store them).
The dequantized value is one float32 product, so kernel, simulation and `QParams.dequantize` agree bit for
bit; a float16 output is that float32 rounded to nearest even (`__float2half_rn`, NumPy's `astype`).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from ..quant.affine import QParams, QSpec
from ..quant.formats import pack_int4, unpack_int4
from . import launch, load

OUT_DTYPES = (np.float32, np.float16)


@dataclass
class Int4Weight:
    """A (rows, cols) weight in 4 bits: packed codes (rows, cols / 2) uint8, per-group scales and zero-points."""

    packed: np.ndarray        # (rows, cols // 2) uint8: column 2j in the low nibble of byte j, 2j+1 high
    scales: np.ndarray        # (rows, groups) float32, groups = ceil(cols / group_size)
    zeros: np.ndarray         # (rows, groups) int8: 0 for signed (symmetric) codes
    cols: int
    group_size: int
    signed: bool = True

    @property
    def rows(self) -> int:
        return self.packed.shape[0]

    @property
    def groups(self) -> int:
        return self.scales.shape[1]

    @property
    def params(self) -> QParams:
        """helpers.quant's QParams for these scales (per group along axis 1, the padded width groups·group_size)."""
        return QParams(torch.from_numpy(self.scales), torch.from_numpy(self.zeros.astype(np.int32)), bits=4,
                       signed=self.signed, symmetric=self.signed, axis=1, group_size=self.group_size)

    def codes(self) -> np.ndarray:
        """The unpacked codes (rows, cols) int8, by helpers.quant's `unpack_int4`."""
        return unpack_int4(torch.from_numpy(self.packed), signed=self.signed).numpy()

    def nbytes(self) -> int:
        """Bytes the GPU reads: packed codes + float32 scales (+ int8 zero-points when unsigned)."""
        return self.packed.nbytes + self.scales.nbytes + (0 if self.signed else self.zeros.nbytes)


def check_group_size(cols: int, group_size: int, multiple: int = 2) -> None:
    if not isinstance(group_size, (int, np.integer)) or group_size < multiple or group_size % multiple:
        raise ValueError(f"group_size must be a positive multiple of {multiple}, got {group_size!r}")
    if cols < 2 or cols % 2:
        raise ValueError(f"the number of columns must be even to pack two 4-bit codes per byte, got {cols}")


def quantize_weight(w, group_size: int = 128, symmetric: bool = True) -> Int4Weight:
    """Round-to-nearest 4-bit quantization of w (rows, cols) with one (scale, zero) per `group_size` columns.

    symmetric=True: signed codes, z = 0 (`QSpec(bits=4, symmetric=True)`); False: unsigned codes with a
    zero-point (`QSpec(bits=4, symmetric=False, signed=False)`). A last, shorter group is calibrated on its
    own values (padded with zeros, which change nothing: 1.1's range always contains 0).
    """
    w = torch.as_tensor(np.asarray(w) if not isinstance(w, torch.Tensor) else w)
    if not w.is_floating_point() or w.ndim != 2:
        raise TypeError(f"quantize_weight expects a 2-D float weight (rows, cols), got {w.dtype} {tuple(w.shape)}")
    rows, cols = w.shape
    check_group_size(cols, group_size)
    groups = math.ceil(cols / group_size)
    padded = torch.zeros(rows, groups * group_size, dtype=torch.float32)
    padded[:, :cols] = w.float()
    spec = QSpec(bits=4, symmetric=symmetric, signed=symmetric, granularity="group", axis=1, group_size=group_size)
    qp = spec.calibrate(padded)
    codes = qp.quantize(padded)[:, :cols]                                           # (rows, cols) int32
    return Int4Weight(pack_int4(codes, signed=symmetric).numpy(), qp.scale.numpy().astype(np.float32),
                      qp.zero_point.numpy().astype(np.int8), cols, group_size, symmetric)


def from_codes(codes, scales, zeros=None, group_size: int = 32, signed: bool = True) -> Int4Weight:
    """An `Int4Weight` from given codes (rows, cols) and scales / zero-points (rows, groups)."""
    codes = torch.as_tensor(np.asarray(codes))
    if codes.ndim != 2:
        raise ValueError(f"codes must be 2-D (rows, cols), got shape {tuple(codes.shape)}")
    check_group_size(codes.shape[1], group_size)
    scales = np.ascontiguousarray(scales, np.float32)
    zeros = np.zeros(scales.shape, np.int8) if zeros is None else np.ascontiguousarray(zeros, np.int8)
    expected = (codes.shape[0], math.ceil(codes.shape[1] / group_size))
    if scales.shape != expected or zeros.shape != expected:
        raise ValueError(f"scales and zeros must have shape (rows, groups) = {expected}, got {scales.shape}, {zeros.shape}")
    return Int4Weight(pack_int4(codes, signed=signed).numpy(), scales, zeros, codes.shape[1], group_size, signed)


def reference(wq: Int4Weight, dtype=np.float32) -> np.ndarray:
    """What the kernel must compute: helpers.quant's unpack_int4 + QParams.dequantize, (rows, cols)."""
    codes = torch.zeros(wq.rows, wq.groups * wq.group_size, dtype=torch.int32)      # padded to whole groups
    codes[:, :wq.cols] = torch.from_numpy(wq.codes()).to(torch.int32)
    w = wq.params.dequantize(codes)[:, :wq.cols].numpy()                            # float32, one product each
    return w.astype(dtype)


def int32(u: int) -> int:
    """C's `(int)` of a 32-bit unsigned value: two's complement, bit 31 is the sign."""
    u &= 0xFFFFFFFF
    return u - (1 << 32) if u & 0x80000000 else u


def kernel_py(t, packed, scales, zeros, out, rows, cols, group_size, is_signed):
    """Line-for-line transcription of `int4_dequant_body` (flat arrays, like the CUDA pointers; `out` holds
    (x, y) pairs, the float2 / __half2 the kernel stores)."""
    i = t.blockIdx.x * t.blockDim.x + t.threadIdx.x             # this thread's byte
    bytes_per_row = cols // 2
    if t.branch(i < rows * bytes_per_row):
        row = i // bytes_per_row
        col = 2 * (i - row * bytes_per_row)                      # the byte's first (low-nibble) column
        byte = int(packed[i])
        if t.branch(is_signed):                                  # sign bit to bit 31, shift back arithmetically
            lo = int32(byte << 28) >> 28
            hi = int32(byte << 24) >> 28
        else:
            lo = byte & 0xF
            hi = byte >> 4
        groups = (cols + group_size - 1) // group_size
        g = row * groups + col // group_size                     # both columns: group_size is even
        s = scales[g]                                            # np.float32
        z = int(zeros[g])
        out[i] = (np.float32(lo - z) * s, np.float32(hi - z) * s)  # columns col, col + 1 = pair i; float16: RNE


def _check(wq: Int4Weight, dtype, block: int) -> type:
    if not isinstance(wq, Int4Weight):
        raise TypeError(f"expected an Int4Weight (see quantize_weight / from_codes), got {type(wq).__name__}")
    if wq.packed.dtype != np.uint8 or wq.packed.shape != (wq.rows, wq.cols // 2):
        raise ValueError(f"packed must be uint8 (rows, cols // 2) = ({wq.rows}, {wq.cols // 2}), "
                         f"got {wq.packed.dtype} {wq.packed.shape}")
    check_group_size(wq.cols, wq.group_size)
    dtype = np.dtype(dtype).type
    if dtype not in OUT_DTYPES:
        raise TypeError(f"output dtype must be float32 or float16, got {np.dtype(dtype).name}")
    if not isinstance(block, int) or not 1 <= block <= 1024:
        raise ValueError(f"block must be an int in 1..1024 threads, got {block!r}")
    return dtype


def grid_for(wq: Int4Weight, block: int) -> int:
    """One thread per packed byte: ceil(rows · cols / 2 / block) blocks."""
    return max(1, -(-wq.packed.size // block))


def simulated(wq: Int4Weight, dtype=np.float32, block: int = 256, report: bool = False):
    """Run the transcription over the GPU launch's grid: (rows, cols) of `dtype` (and, with `report`, the
    simulator's counts: sectors per request, divergent branches)."""
    dtype = _check(wq, dtype, block)
    out = np.full((wq.rows, wq.cols), np.nan, dtype)              # NaN: every element must be written
    pairs = out.view([("x", dtype), ("y", dtype)]).reshape(-1)    # (rows · cols / 2,) float2 / __half2
    rep = launch(kernel_py, grid_for(wq, block), block, np.ascontiguousarray(wq.packed).reshape(-1),
                 wq.scales.reshape(-1), wq.zeros.reshape(-1), pairs, wq.rows, wq.cols, wq.group_size,
                 int(wq.signed))
    return (out, rep) if report else out


def on_gpu(wq: Int4Weight, dtype=np.float32, block: int = 256):
    """Launch the real kernel with CuPy; returns a cupy array (rows, cols) of `dtype`."""
    import cupy as cp

    dtype = _check(wq, dtype, block)
    packed, scales, zeros = (cp.asarray(np.ascontiguousarray(a)) for a in (wq.packed, wq.scales, wq.zeros))
    out = cp.empty((wq.rows, wq.cols), dtype)
    fn = load("int4_dequant", "int4_dequant" if dtype is np.float32 else "int4_dequant_half")
    fn((grid_for(wq, block),), (block,), (packed, scales, zeros, out, np.int32(wq.rows), np.int32(wq.cols),
                                          np.int32(wq.group_size), np.int32(wq.signed)))
    return out
