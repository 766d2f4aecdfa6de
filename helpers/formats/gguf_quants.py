"""GGML's block quantization formats, decoded from their byte layout (the C structs of ggml-common.h).

A quantized GGUF tensor is a flat run of *blocks*: each block covers `block_size` consecutive weights of a row
(along ne[0], the fastest dimension) and stores a few float16 scales plus packed small integers. Decoding is

    w = d · q            (symmetric: Q8_0, Q4_0, Q5_0, Q6_K)        q a signed code, d the block's scale
    w = d · q + m        (asymmetric: Q4_1, Q5_1)                   m the block's minimum
    w = (d·sc) · q - (dmin·mn)    (K-quants: a 256-weight super-block of 8 sub-blocks, 6-bit sub-scales sc, mins mn)

Each `dequantize_*` below takes the blocks as a (n_blocks, type_size) uint8 array, returns (n_blocks, block_size)
float32, and does the float32 arithmetic in the same order as ggml's reference `dequantize_row_*` (ggml-quants.c),
so the result is bit-equal to llama.cpp's and to gguf-py's `gguf.quants.dequantize` (tests/test_gguf.py checks that).
Sources: ggml/src/ggml-common.h (block structs), ggml/src/ggml-quants.c (reference row functions).
"""
from __future__ import annotations

from enum import IntEnum

import numpy as np

QK = 32  # weights per block of the "legacy" formats (Q4_0 ... Q8_0)
QK_K = 256  # weights per super-block of the K-quants


class GGMLType(IntEnum):
    """ggml's tensor types as numbered in ggml.h (`enum ggml_type`); the ids are what a GGUF file stores."""

    F32 = 0
    F16 = 1
    Q4_0 = 2
    Q4_1 = 3
    Q5_0 = 6
    Q5_1 = 7
    Q8_0 = 8
    Q8_1 = 9
    Q2_K = 10
    Q3_K = 11
    Q4_K = 12
    Q5_K = 13
    Q6_K = 14
    Q8_K = 15
    IQ2_XXS = 16
    IQ2_XS = 17
    IQ3_XXS = 18
    IQ1_S = 19
    IQ4_NL = 20
    IQ3_S = 21
    IQ2_S = 22
    IQ4_XS = 23
    I8 = 24
    I16 = 25
    I32 = 26
    I64 = 27
    F64 = 28
    IQ1_M = 29
    BF16 = 30
    TQ1_0 = 34
    TQ2_0 = 35
    MXFP4 = 39


# ggml_type -> (weights per block, bytes per block), from the struct sizes in ggml-common.h.
BLOCK = {
    GGMLType.F32: (1, 4), GGMLType.F16: (1, 2), GGMLType.BF16: (1, 2), GGMLType.F64: (1, 8),
    GGMLType.I8: (1, 1), GGMLType.I16: (1, 2), GGMLType.I32: (1, 4), GGMLType.I64: (1, 8),
    GGMLType.Q4_0: (QK, 2 + QK // 2),  # 18
    GGMLType.Q4_1: (QK, 2 + 2 + QK // 2),  # 20
    GGMLType.Q5_0: (QK, 2 + 4 + QK // 2),  # 22
    GGMLType.Q5_1: (QK, 2 + 2 + 4 + QK // 2),  # 24
    GGMLType.Q8_0: (QK, 2 + QK),  # 34
    GGMLType.Q8_1: (QK, 2 + 2 + QK),  # 36 = sizeof(block_q8_1) today (gguf-py still lists the old 40: float d, s)
    GGMLType.Q2_K: (QK_K, QK_K // 16 + QK_K // 4 + 2 + 2),  # 84
    GGMLType.Q3_K: (QK_K, QK_K // 8 + QK_K // 4 + 12 + 2),  # 110
    GGMLType.Q4_K: (QK_K, 2 + 2 + 12 + QK_K // 2),  # 144
    GGMLType.Q5_K: (QK_K, 2 + 2 + 12 + QK_K // 8 + QK_K // 2),  # 176
    GGMLType.Q6_K: (QK_K, QK_K // 2 + QK_K // 4 + QK_K // 16 + 2),  # 210
    GGMLType.Q8_K: (QK_K, 4 + QK_K + QK_K // 16 * 2),  # 292
    GGMLType.IQ2_XXS: (QK_K, 2 + QK_K // 4), GGMLType.IQ2_XS: (QK_K, 2 + QK_K // 4 + QK_K // 32),
    GGMLType.IQ3_XXS: (QK_K, 2 + 3 * QK_K // 8), GGMLType.IQ1_S: (QK_K, 2 + QK_K // 8 + QK_K // 16),
    GGMLType.IQ4_NL: (QK, 2 + QK // 2), GGMLType.IQ3_S: (QK_K, 2 + QK_K // 4 + QK_K // 32 + QK_K // 8 + QK_K // 64),
    GGMLType.IQ2_S: (QK_K, 2 + QK_K // 4 + QK_K // 16), GGMLType.IQ4_XS: (QK_K, 2 + 2 + QK_K // 64 + QK_K // 2),
    GGMLType.IQ1_M: (QK_K, QK_K // 8 + QK_K // 16 + QK_K // 32), GGMLType.TQ1_0: (QK_K, 2 + 48 + 4),
    GGMLType.TQ2_0: (QK_K, 2 + QK_K // 4), GGMLType.MXFP4: (QK, 1 + QK // 2),
}


def bytes_per_weight(ggml_type) -> float:
    """Storage cost of one weight in a type, from its block layout (e.g. Q4_0: 18 bytes / 32 weights = 0.5625)."""
    block_size, type_size = BLOCK[GGMLType(ggml_type)]
    return type_size / block_size


def _f16(blocks: np.ndarray, start: int) -> np.ndarray:
    """The little-endian float16 at byte `start` of every block, as float32.  (n_blocks, 1)"""
    return blocks[:, start:start + 2].copy().view("<f2").astype(np.float32)


def _nibbles(qs: np.ndarray) -> np.ndarray:
    """Byte j of a 16-byte run holds weight j (low nibble) and weight j+16 (high nibble).  (n, 16) -> (n, 32)"""
    return np.concatenate([qs & 0x0F, qs >> 4], axis=1)


def dequantize_q8_0(blocks: np.ndarray) -> np.ndarray:
    """block_q8_0 { ggml_half d; int8_t qs[32]; }  ->  w = d * qs."""
    d = _f16(blocks, 0)  # (n, 1)
    qs = blocks[:, 2:34].view(np.int8).astype(np.float32)  # (n, 32)
    return qs * d


def dequantize_q4_0(blocks: np.ndarray) -> np.ndarray:
    """block_q4_0 { ggml_half d; uint8_t qs[16]; }  ->  w = d * (nibble - 8)."""
    d = _f16(blocks, 0)  # (n, 1)
    q = _nibbles(blocks[:, 2:18]).astype(np.int8) - 8  # (n, 32) in [-8, 7]
    return q.astype(np.float32) * d


def dequantize_q4_1(blocks: np.ndarray) -> np.ndarray:
    """block_q4_1 { ggml_half d; ggml_half m; uint8_t qs[16]; }  ->  w = d * nibble + m."""
    d, m = _f16(blocks, 0), _f16(blocks, 2)  # (n, 1) each
    q = _nibbles(blocks[:, 4:20]).astype(np.float32)  # (n, 32) in [0, 15]
    return q * d + m


def _fifth_bits(qh: np.ndarray) -> np.ndarray:
    """uint8 qh[4] read as one little-endian uint32: bit j is the 5th bit of weight j.  (n, 4) -> (n, 32) in {0, 16}"""
    bits = qh.copy().view("<u4") >> np.arange(32, dtype=np.uint32)  # (n, 32)
    return ((bits & 1) << 4).astype(np.uint8)


def dequantize_q5_0(blocks: np.ndarray) -> np.ndarray:
    """block_q5_0 { ggml_half d; uint8_t qh[4]; uint8_t qs[16]; }  ->  w = d * ((nibble | bit << 4) - 16)."""
    d = _f16(blocks, 0)  # (n, 1)
    q = (_nibbles(blocks[:, 6:22]) | _fifth_bits(blocks[:, 2:6])).astype(np.int8) - 16  # (n, 32) in [-16, 15]
    return q.astype(np.float32) * d


def dequantize_q5_1(blocks: np.ndarray) -> np.ndarray:
    """block_q5_1 { ggml_half d; ggml_half m; uint8_t qh[4]; uint8_t qs[16]; }  ->  w = d * (nibble | bit << 4) + m."""
    d, m = _f16(blocks, 0), _f16(blocks, 2)  # (n, 1) each
    q = (_nibbles(blocks[:, 8:24]) | _fifth_bits(blocks[:, 4:8])).astype(np.float32)  # (n, 32) in [0, 31]
    return q * d + m


def _scale_min_k4(scales: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """ggml's get_scale_min_k4: 8 six-bit scales and 8 six-bit mins packed in 12 bytes.  (n, 12) -> (n, 8), (n, 8)

    sub-blocks 0..3: sc = q[j] & 63,                          mn = q[j+4] & 63
    sub-blocks 4..7: sc = (q[j+4] & 15) | (q[j-4] >> 6) << 4,   mn = (q[j+4] >> 4) | (q[j] >> 6) << 4
    """
    lo, mid, hi = scales[:, 0:4], scales[:, 4:8], scales[:, 8:12]  # (n, 4) each
    sc = np.concatenate([lo & 63, (hi & 15) | ((lo >> 6) << 4)], axis=1)
    mn = np.concatenate([mid & 63, (hi >> 4) | ((mid >> 6) << 4)], axis=1)
    return sc, mn


def dequantize_q4_k(blocks: np.ndarray) -> np.ndarray:
    """block_q4_K { ggml_half d; ggml_half dmin; uint8_t scales[12]; uint8_t qs[128]; }

    8 sub-blocks of 32 weights; 32 bytes of qs hold two sub-blocks (low nibbles: the first, high nibbles: the second).
    w = (d * sc[s]) * nibble - (dmin * mn[s]).
    """
    n = len(blocks)
    d, dmin = _f16(blocks, 0), _f16(blocks, 2)  # (n, 1) each
    sc, mn = _scale_min_k4(blocks[:, 4:16])  # (n, 8) each
    qs = blocks[:, 16:144].reshape(n, 4, 1, 32)  # (n, 4 byte-groups, 1, 32)
    q = ((qs >> np.array([0, 4], np.uint8).reshape(1, 1, 2, 1)) & 15).reshape(n, 8, 32)  # (n, 8 sub-blocks, 32)
    scale = (d * sc.astype(np.float32))[:, :, None]  # (n, 8, 1)
    minimum = (dmin * mn.astype(np.float32))[:, :, None]
    return (scale * q.astype(np.float32) - minimum).reshape(n, QK_K)


def dequantize_q6_k(blocks: np.ndarray) -> np.ndarray:
    """block_q6_K { uint8_t ql[128]; uint8_t qh[64]; int8_t scales[16]; ggml_half d; }

    Two halves of 128 weights; in half h, weight 32*k + l (k = 0..3, l = 0..31) has low 4 bits from
    ql[64h + l + 32*(k & 1)] (low nibble for k < 2, high for k >= 2) and high 2 bits from qh[32h + l] >> 2k.
    w = (d * scales[16-weight group]) * (q - 32).
    """
    n = len(blocks)
    ql = blocks[:, 0:128].reshape(n, 2, 1, 64)  # (n, half, 1, 64)
    low = ((ql >> np.array([0, 4], np.uint8).reshape(1, 1, 2, 1)) & 15).reshape(n, 2, 4, 32)  # (n, half, k, l)
    qh = blocks[:, 128:192].reshape(n, 2, 1, 32)  # (n, half, 1, 32)
    high = ((qh >> np.array([0, 2, 4, 6], np.uint8).reshape(1, 1, 4, 1)) & 3)  # (n, half, k, l)
    q = (low | (high << 4)).astype(np.int8) - 32  # (n, 2, 4, 32) in [-32, 31]
    sc = blocks[:, 192:208].view(np.int8).astype(np.float32)  # (n, 16): one per 16 weights
    d = _f16(blocks, 208)  # (n, 1)
    scale = (d * sc)[:, :, None]  # (n, 16, 1)
    return (scale * q.reshape(n, 16, 16).astype(np.float32)).reshape(n, QK_K)


DEQUANTIZE = {
    GGMLType.Q8_0: dequantize_q8_0, GGMLType.Q4_0: dequantize_q4_0, GGMLType.Q4_1: dequantize_q4_1,
    GGMLType.Q5_0: dequantize_q5_0, GGMLType.Q5_1: dequantize_q5_1, GGMLType.Q4_K: dequantize_q4_k,
    GGMLType.Q6_K: dequantize_q6_k,
}
PLAIN = {GGMLType.F32: "<f4", GGMLType.F16: "<f2", GGMLType.F64: "<f8", GGMLType.I8: "i1", GGMLType.I16: "<i2",
         GGMLType.I32: "<i4", GGMLType.I64: "<i8"}


def dequantize(raw: np.ndarray, ggml_type, shape: tuple) -> np.ndarray:
    """A tensor's bytes (uint8, as stored) -> float32 array of `shape` (numpy order: last axis = ne[0])."""
    t = GGMLType(ggml_type)
    raw = np.asarray(raw, dtype=np.uint8).reshape(-1)
    n = int(np.prod(shape, dtype=np.int64))
    if t == GGMLType.BF16:  # the top half of a float32
        return (raw.view("<u2").astype(np.uint32) << 16).view(np.float32).reshape(shape)
    if t in PLAIN:
        return raw.view(PLAIN[t]).astype(np.float32).reshape(shape)
    if t not in DEQUANTIZE:
        raise NotImplementedError(f"dequantizing {t.name} is not implemented (supported: "
                                  f"{', '.join(x.name for x in DEQUANTIZE)}); use tensor_bytes() for its raw bytes")
    block_size, type_size = BLOCK[t]
    if n % block_size or len(raw) != n // block_size * type_size:
        raise ValueError(f"{t.name}: {len(raw)} bytes cannot hold {n} weights in blocks of {block_size}")
    return DEQUANTIZE[t](raw.reshape(-1, type_size)).reshape(shape)


def _roundf(x: np.ndarray) -> np.ndarray:
    """C's roundf: halves away from zero (numpy's round goes to even)."""
    a = np.abs(x)
    f = np.floor(a)
    return np.copysign(f + (a - f >= 0.5), x)


def quantize_q8_0(x: np.ndarray) -> np.ndarray:
    """float32 (..., k·32) -> Q8_0 bytes, as ggml's quantize_row_q8_0_ref: d = max|x| / 127, q = roundf(x / d)."""
    x = np.asarray(x, dtype=np.float32)
    if x.shape[-1] % QK:
        raise ValueError(f"Q8_0 needs the last dimension to be a multiple of {QK}, got shape {x.shape}")
    blocks = x.reshape(-1, QK)  # (n, 32)
    d = np.abs(blocks).max(axis=1, keepdims=True) / np.float32(127)  # (n, 1)
    with np.errstate(divide="ignore"):
        inv = np.where(d == 0, np.float32(0), np.float32(1) / d)
    q = _roundf(blocks * inv).astype(np.int8)  # (n, 32)
    out = np.concatenate([d.astype("<f2").view(np.uint8), q.view(np.uint8)], axis=1)  # (n, 34)
    return out.reshape(*x.shape[:-1], x.shape[-1] // QK * BLOCK[GGMLType.Q8_0][1])
