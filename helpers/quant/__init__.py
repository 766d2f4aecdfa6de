"""Quantization from first principles (Module 1.1), the base that 1.2, 1.3, 1.5, 1.6 and 2.2 build on.

    affine.py       scale / zero-point from a range (min/max, percentile, MSE search); symmetric or not;
                    per-tensor, per-channel, per-group; quantize / dequantize / fake-quantize; MSE, SQNR
    formats.py      number formats bit for bit: FP8 E4M3 / E5M2, FP16, BF16 encode/decode; INT4 packing
    codebook.py     non-uniform quantization with a k-means codebook
    integer_ops.py  integer-only inference: int8 GEMM/conv with int32 accumulation, fixed-point
                    requantization, and a whole CNN (`IntegerCNN`) built from a float model
"""
from .affine import (QParams, QSpec, fake_quantize, mse, qrange, quantize, scale_zero_point, sqnr_db,
                     uniform_noise_mse)
from .codebook import Codebook, kmeans_codebook
from .formats import (BF16, E4M3, E5M2, FORMATS, FP16, FloatFormat, decode, encode, int_values, pack_int4,
                      representable, round_to, unpack_int4)
from .integer_ops import (IntegerCNN, int_conv2d, int_linear, int_maxpool2d, int_relu, plan_of,
                          quantize_multiplier, requantize, run_float)

__all__ = [
    "BF16", "Codebook", "E4M3", "E5M2", "FORMATS", "FP16", "FloatFormat", "IntegerCNN", "QParams", "QSpec",
    "decode", "encode", "fake_quantize", "int_conv2d", "int_linear", "int_maxpool2d", "int_relu", "int_values",
    "kmeans_codebook", "mse", "pack_int4", "plan_of", "qrange", "quantize", "quantize_multiplier",
    "representable", "requantize", "round_to", "run_float", "scale_zero_point", "sqnr_db", "unpack_int4",
    "uniform_noise_mse",
]
