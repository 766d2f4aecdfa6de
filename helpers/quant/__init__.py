"""Quantization from first principles (Modules 1.1 and 1.2), the base that 1.3, 1.5, 1.6 and 2.2 build on.

1.1 — the building blocks:

    affine.py       scale / zero-point from a range (min/max, percentile, MSE search); symmetric or not;
                    per-tensor, per-channel, per-group; quantize / dequantize / fake-quantize; MSE, SQNR
    formats.py      number formats bit for bit: FP8 E4M3 / E5M2, FP16, BF16 encode/decode; INT4 packing
    codebook.py     non-uniform quantization with a k-means codebook
    integer_ops.py  integer-only inference: int8 GEMM/conv with int32 accumulation, fixed-point
                    requantization, and a whole CNN (`IntegerCNN`) built from a float model

1.2 — methods for LLMs (on the course's pretrained SmolLM2, `helpers.llm`):
    evaluate.py     WikiText-2 perplexity (GPTQ protocol), model bytes, the layer-by-layer calibration pass
    qat.py          quantization-aware training: fake quantization with the straight-through estimator; static and
                    dynamic PTQ
    nf4.py          QLoRA's 4-bit NormalFloat and double quantization, bit-exact with bitsandbytes
    gptq.py         GPTQ (Frantar et al. 2023): Hessian-aware column-by-column weight quantization of an LLM
    awq.py          AWQ (Lin et al. 2024): activation-aware per-channel scaling before RTN, salient-channel experiment
    smoothquant.py  SmoothQuant (Xiao et al. 2023): outliers migrated from activations to weights; W8A8, int8 GEMM
    qlora.py        QLoRA with bitsandbytes + peft: NF4 base, LoRA adapters, instruction data, a plain training loop
    crosscheck.py   the same methods run by llm-compressor on the same model and calibration data
"""
from . import crosscheck, evaluate, qlora
from .affine import (QParams, QSpec, fake_quantize, mse, qrange, quantize, scale_zero_point, sqnr_db,
                     uniform_noise_mse)
from .awq import (awq_layer, clip_search, fold_scale, protect_salient, quantize_model_awq, quantize_model_rtn,
                  salient_channel_experiment, salient_mask, search_scale)
from .codebook import Codebook, kmeans_codebook
from .formats import (BF16, E4M3, E5M2, FORMATS, FP16, FloatFormat, decode, encode, int_values, pack_int4,
                      representable, round_to, unpack_int4)
from .gptq import (GPTQInfo, GPTQReport, HessianAccumulator, gptq_quantize, hessian, quantize_model_gptq,
                   rtn_quantize)
from .integer_ops import (IntegerCNN, int_conv2d, int_linear, int_maxpool2d, int_relu, plan_of,
                          quantize_multiplier, requantize, run_float)
from .nf4 import (NF4Tensor, bits_per_parameter, dequantize_blockwise_8bit, dequantize_nf4, dynamic_map, nf4_codebook,
                  quantize_blockwise_8bit, quantize_nf4)
from .smoothquant import (W8A8Linear, activation_picture, activation_stats, int8_matmul, quantize_model_w8a8,
                          smooth_model, smoothing_scales)
from .qat import (FakeQuant, QATConv2d, QATLinear, calibrate, fake_quantize_ste, prepare_qat, ptq, round_ste,
                  rounding_gradients, threshold_distance)

__all__ = [
    "BF16", "Codebook", "E4M3", "E5M2", "FORMATS", "FP16", "FloatFormat", "IntegerCNN", "QParams", "QSpec",
    "decode", "encode", "fake_quantize", "int_conv2d", "int_linear", "int_maxpool2d", "int_relu", "int_values",
    "kmeans_codebook", "mse", "pack_int4", "plan_of", "qrange", "quantize", "quantize_multiplier",
    "representable", "requantize", "round_to", "run_float", "scale_zero_point", "sqnr_db", "unpack_int4",
    "uniform_noise_mse",
    "GPTQInfo", "GPTQReport", "HessianAccumulator", "gptq_quantize", "hessian", "quantize_model_gptq",
    "rtn_quantize",
    "NF4Tensor", "bits_per_parameter", "dequantize_blockwise_8bit", "dequantize_nf4", "dynamic_map", "nf4_codebook",
    "quantize_blockwise_8bit", "quantize_nf4",
    "FakeQuant", "QATConv2d", "QATLinear", "calibrate", "fake_quantize_ste", "prepare_qat", "ptq", "round_ste",
    "rounding_gradients", "threshold_distance",
    "awq_layer", "clip_search", "fold_scale", "protect_salient", "quantize_model_awq", "quantize_model_rtn",
    "salient_channel_experiment", "salient_mask", "search_scale",
    "W8A8Linear", "activation_picture", "activation_stats", "int8_matmul", "quantize_model_w8a8", "smooth_model",
    "smoothing_scales",
]
