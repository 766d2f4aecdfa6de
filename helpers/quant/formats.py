"""Number formats bit for bit: INT8/INT4 (two 4-bit codes packed per byte), FP8 E4M3 / E5M2, FP16, BF16.

A binary floating-point format with E exponent bits, M mantissa bits and bias b stores
sign | exponent e | mantissa m and means

    e == 0              (-1)^s · 2^(1-b) · m / 2^M            subnormal (includes ±0)
    0 < e < e_max       (-1)^s · 2^(e-b) · (1 + m / 2^M)       normal
    e == e_max          IEEE: inf (m == 0) or NaN;  E4M3FN: normal except m == 111 which is NaN

`encode` rounds a float32 to the nearest code (ties to even), exactly as PyTorch's casts do (checked on
all codes and on random values in tests/test_quant.py): a value that rounds past the largest finite number
becomes ±inf in the IEEE formats (E5M2, FP16, BF16). E4M3FN has no inf; PyTorch's cast (2.13, CPU)
*saturates* it — every |x| ≥ 448, ±inf included, becomes ±448 — which is the OCP FP8 spec's "saturation
mode" (NVIDIA's __NV_SATFINITE); NaN stays NaN. `FloatFormat.saturate` selects that behaviour.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class FloatFormat:
    """A binary floating-point format: sign bit, `exp_bits`, `man_bits`, exponent `bias`."""

    name: str
    exp_bits: int
    man_bits: int
    bias: int
    ieee: bool = True  # IEEE specials (top exponent = inf/NaN); False = E4M3FN (only S.1111.111 is NaN)
    saturate: bool = False  # overflow (and ±inf) → ±max finite instead of ±inf / NaN
    nan_man: int | None = None  # mantissa of the NaN that encode() writes (default: quiet bit only)

    @property
    def bits(self) -> int:
        return 1 + self.exp_bits + self.man_bits

    @property
    def e_max(self) -> int:
        return (1 << self.exp_bits) - 1

    @property
    def max_finite_code(self) -> int:
        """The code (sign 0) of the largest finite value."""
        if self.ieee:
            return (self.e_max << self.man_bits) - 1
        return (self.e_max << self.man_bits) | ((1 << self.man_bits) - 2)

    @property
    def overflow_code(self) -> int:
        """What a too-large magnitude becomes: +max (saturating), +inf (IEEE) or the NaN code."""
        if self.saturate:
            return self.max_finite_code
        return (self.e_max << self.man_bits) if self.ieee else (self.e_max << self.man_bits) | ((1 << self.man_bits) - 1)

    @property
    def nan_code(self) -> int:
        if not self.ieee:
            return (self.e_max << self.man_bits) | ((1 << self.man_bits) - 1)
        man = (1 << (self.man_bits - 1)) if self.nan_man is None else self.nan_man
        return (self.e_max << self.man_bits) | man

    @property
    def max(self) -> float:
        return float(decode(torch.tensor([self.max_finite_code]), self)[0])

    @property
    def min_normal(self) -> float:
        return 2.0 ** (1 - self.bias)

    @property
    def min_subnormal(self) -> float:
        return 2.0 ** (1 - self.bias - self.man_bits)


E4M3 = FloatFormat("fp8_e4m3fn", 4, 3, 7, ieee=False, saturate=True)
E5M2 = FloatFormat("fp8_e5m2", 5, 2, 15, nan_man=0b11)
FP16 = FloatFormat("fp16", 5, 10, 15)
BF16 = FloatFormat("bf16", 8, 7, 127)
FORMATS = {f.name: f for f in (E4M3, E5M2, FP16, BF16)}
TORCH_DTYPES = {"fp8_e4m3fn": torch.float8_e4m3fn, "fp8_e5m2": torch.float8_e5m2,
                "fp16": torch.float16, "bf16": torch.bfloat16}


def fields(codes: torch.Tensor, fmt: FloatFormat):
    """(sign, exponent, mantissa) bit fields of integer codes."""
    c = codes.to(torch.int64)
    m = c & ((1 << fmt.man_bits) - 1)
    e = (c >> fmt.man_bits) & fmt.e_max
    s = (c >> (fmt.bits - 1)) & 1
    return s, e, m


def decode(codes: torch.Tensor, fmt: FloatFormat) -> torch.Tensor:
    """The float32 values of integer codes (any integer dtype; only the low `fmt.bits` bits are read)."""
    s, e, m = fields(codes, fmt)
    sign = 1.0 - 2.0 * s.double()
    frac = m.double() / (1 << fmt.man_bits)
    normal = torch.ldexp(1.0 + frac, (e - fmt.bias).double())
    sub = torch.ldexp(frac, torch.full_like(e, 1 - fmt.bias).double())
    val = sign * torch.where(e == 0, sub, normal)
    if fmt.ieee:
        top = e == fmt.e_max
        val = torch.where(top & (m == 0), sign * torch.inf, val)
        val = torch.where(top & (m != 0), torch.nan, val)
    else:
        val = torch.where((e == fmt.e_max) & (m == (1 << fmt.man_bits) - 1), torch.nan, val)
    return val.to(torch.float32)


def encode(x: torch.Tensor, fmt: FloatFormat) -> torch.Tensor:
    """Codes (int64) of the nearest `fmt` values to float32 `x`, ties to even; overflow → ±inf or ±max."""
    x = torch.as_tensor(x, dtype=torch.float32)
    bits = x.view(torch.int32).to(torch.int64) & 0xFFFFFFFF
    sign = bits >> 31
    a = bits & 0x7FFFFFFF                                     # |x| as float32 bits
    shift = 23 - fmt.man_bits
    # normal range of the target: rebias the exponent, then round the mantissa to man_bits (ties to even)
    rebased = a - ((127 - fmt.bias) << 23)
    odd = (rebased >> shift) & 1
    normal = (rebased + (1 << (shift - 1)) - 1 + odd) >> shift
    # subnormal range: |x| / min_subnormal rounded to an integer (exact in float64; torch.round is half-even)
    sub = torch.round(x.abs().double() * 2.0 ** (fmt.bias - 1 + fmt.man_bits)).to(torch.int64)
    code = torch.where(a < ((127 - fmt.bias + 1) << 23), sub, normal)
    code = torch.where(code > fmt.max_finite_code, fmt.overflow_code, code)
    code = torch.where(a == 0x7F800000, fmt.overflow_code, code)      # ±inf
    code = torch.where(a > 0x7F800000, fmt.nan_code, code)            # NaN
    return code | (sign << (fmt.bits - 1))


def round_to(x: torch.Tensor, fmt: FloatFormat) -> torch.Tensor:
    """x rounded to the nearest value of `fmt`, as float32 (= decode(encode(x)))."""
    return decode(encode(x, fmt), fmt)


def representable(fmt: FloatFormat) -> torch.Tensor:
    """Every finite value of an 8-bit (or 16-bit) format, sorted, without the duplicate -0."""
    codes = torch.arange(1 << fmt.bits)
    v = decode(codes, fmt)
    v = v[torch.isfinite(v)]
    return torch.unique(v)  # sorted; -0.0 and 0.0 compare equal


def int_values(bits: int, signed: bool = True) -> torch.Tensor:
    """The values of a `bits`-bit integer code (two's complement when signed)."""
    return torch.arange(-(1 << (bits - 1)), 1 << (bits - 1)) if signed else torch.arange(0, 1 << bits)


# --- 4-bit packing ---------------------------------------------------------------------------------


def pack_int4(q: torch.Tensor, signed: bool = True) -> torch.Tensor:
    """Two 4-bit codes per byte along the last dim (even index → low nibble, odd → high nibble), uint8.

    q: integers in [-8, 7] (signed) or [0, 15]; the last dimension must be even.
    """
    lo_v, hi_v = (-8, 7) if signed else (0, 15)
    if q.is_floating_point():
        raise TypeError("pack_int4 expects integer codes")
    if q.shape[-1] % 2:
        raise ValueError(f"last dimension must be even to pack pairs, got {q.shape[-1]}")
    if q.numel() and (int(q.min()) < lo_v or int(q.max()) > hi_v):
        raise ValueError(f"values must lie in [{lo_v}, {hi_v}] to fit 4 bits")
    n = q.to(torch.int64) & 0xF                               # two's complement nibble
    return (n[..., 0::2] | (n[..., 1::2] << 4)).to(torch.uint8)


def unpack_int4(packed: torch.Tensor, signed: bool = True) -> torch.Tensor:
    """Inverse of `pack_int4`: uint8 (..., n) → int8 (..., 2n)."""
    p = packed.to(torch.int64)
    lo, hi = p & 0xF, (p >> 4) & 0xF
    out = torch.stack([lo, hi], dim=-1).reshape(*p.shape[:-1], -1)
    if signed:
        out = torch.where(out >= 8, out - 16, out)
    return out.to(torch.int8)
