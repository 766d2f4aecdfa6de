"""`make bench` rows for Module 1.1: INT8 vs FP32 GEMM on this CPU, and our pure-PyTorch kernels vs torch's.

`run()` → rows with `module`, `name`, `ours`, `reference`, `unit`, `note` (see helpers/bench.py). Times are the
fastest of several runs (the one least disturbed by other processes).
"""
from __future__ import annotations

import time
import warnings

import torch
import torch.nn.functional as F

from .affine import QSpec
from .formats import E4M3, encode
from .integer_ops import int_linear, quantize_multiplier, requantize


def _best(fn, reps: int = 11) -> float:
    fn()
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def run(m: int = 256, k: int = 1024, n: int = 1024) -> list[dict]:
    warnings.filterwarnings("ignore", message=".*quantized tensor creation functions.*")
    torch.backends.quantized.engine = "x86"
    g = torch.Generator().manual_seed(0)
    x, w = torch.rand(m, k, generator=g), torch.randn(n, k, generator=g) * 0.05
    xqp, wqp = QSpec(bits=8, signed=False).calibrate(x), QSpec(bits=8, symmetric=True).calibrate(w)
    sx, zx, sw = float(xqp.scale), int(xqp.zero_point), float(wqp.scale)
    sy, zy = 0.05, 128
    xq_t = torch.quantize_per_tensor(x, sx, zx, torch.quint8)
    packed = torch.ops.quantized.linear_prepack(torch.quantize_per_tensor(w, sw, 0, torch.qint8), None)
    t_fp32 = _best(lambda: F.linear(x, w))
    t_int8 = _best(lambda: torch.ops.quantized.linear(xq_t, packed, sy, zy))
    xq, wq = xqp.quantize(x), wqp.quantize(w)
    m0, shift = quantize_multiplier(sx * sw / sy)
    t_ours = _best(lambda: requantize(int_linear(xq, zx, wq), m0, shift, zy, 0, 255), reps=5)
    v = torch.randn(1_000_000, generator=g) * 100
    t_enc = _best(lambda: encode(v, E4M3), reps=5)
    t_cast = _best(lambda: v.to(torch.float8_e4m3fn), reps=5)
    shape = f"({m}x{k}) @ ({k}x{n}), {torch.get_num_threads()} threads"
    return [
        {"module": "1.1", "name": "gemm_int8_torch_vs_fp32", "ours": t_int8, "reference": t_fp32, "unit": "s",
         "note": f"torch quantized linear (x86) vs F.linear fp32, {shape}: {t_fp32 / t_int8:.2f}x"},
        {"module": "1.1", "name": "gemm_int8_ours_vs_torch_int8", "ours": t_ours, "reference": t_int8, "unit": "s",
         "note": f"helpers.quant int_linear + requantize (int32 matmul, no VNNI) vs torch INT8, {shape}"},
        {"module": "1.1", "name": "fp8_e4m3_encode_ours_vs_torch_cast", "ours": t_enc, "reference": t_cast, "unit": "s",
         "note": "1M float32 values, bit-exact with the cast"},
    ]


if __name__ == "__main__":
    for r in run():
        print(r)
