"""4-bit NormalFloat (NF4) with double quantization (Dettmers et al., 2023, "QLoRA", §3), bit-exact with bitsandbytes.

Pretrained weights are close to normal, so QLoRA spends its 16 levels on equal-probability slices of N(0, 1)
instead of evenly (the NF4 codebook, normalised to [-1, 1]). A weight tensor is cut, in row-major order, into
blocks of 64 values; each block keeps its absolute maximum (absmax, float32) and every value becomes the index
of the nearest code to value / absmax — two 4-bit indices per byte. Storage: 4 + 32/64 = 4.5 bits per weight.

Double quantization (§3, "Double Quantization") quantizes the absmax values themselves: subtract their mean,
then store them as 8-bit codes of the *dynamic* map (Dettmers, 2016, "8-Bit Approximations for Parallelism in
Deep Learning": a sign, a run of zeros that picks the decade, a linear fraction) in blocks of 256 with one float32
scale each: 4 + 8/64 + 32/(64·256) ≈ 4.127 bits per weight.

The arithmetic is bitsandbytes 0.50's CPU path, so codes, absmax values and dequantized weights are equal bit for
bit (tests/test_nf4.py):
    4-bit  value · (1/absmax) (value / absmax in a last, partial block), clamped to [-1, 1]; nearest code by the
           float32 midpoints between codes, a tie going to the lower code; first value of a pair in the high
           nibble; an odd count is padded with the code of 0.
    8-bit  value · (1/absmax), clamped; the CPU kernel first snaps it to the nearest of 65,536 evenly spaced
           points of [-1, 1] and takes that point's nearest code (a lookup table instead of a search), so near a
           midpoint — and near 0, where codes lie closer than the grid step — it can pick another code than the
           exact nearest (its error at most 2/65535 larger); an all-zero block gets code 0.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch

NF4_OFFSET = 0.9677083        # the outermost quantile QLoRA uses: Φ⁻¹(0.9677083) ≈ 1.848 standard deviations
LUT_POINTS = 65536            # bitsandbytes' CPU grid for 8-bit blockwise quantization


def nf4_codebook(offset: float = NF4_OFFSET) -> torch.Tensor:
    """The 16 NF4 values, sorted, in [-1, 1], float32 (QLoRA §3; bitsandbytes' `create_normal_map`).

    8 positive values Φ⁻¹(p) at p evenly spaced from `offset` down to (not including) 1/2, 7 negative ones from 8
    points, and an exact 0 — asymmetric so that 0 is representable — then divided by the largest.
    """
    if not 0.5 < offset < 1:
        raise ValueError(f"offset is a probability in (0.5, 1), got {offset!r}")
    pos = torch.special.ndtri(torch.linspace(offset, 0.5, 9)[:-1].double())      # (8,) Φ⁻¹, float64
    neg = -torch.special.ndtri(torch.linspace(offset, 0.5, 8)[:-1].double())     # (7,)
    v = torch.cat([neg, torch.zeros(1, dtype=torch.float64), pos]).float().sort().values
    return v / v.max()                                                           # (16,) in [-1, 1]


def dynamic_map(max_exponent_bits: int = 7, total_bits: int = 8) -> torch.Tensor:
    """The signed dynamic 8-bit map (Dettmers, 2016; bitsandbytes' `create_dynamic_map`), (2^total_bits,) float32.

    Decade 10^(e - max_exponent_bits + 1), e = 0 .. max_exponent_bits - 1, holds 2^(e + linear_bits) values: the
    midpoints of that many equal slices of [0.1, 1], scaled by the decade, with both signs — small decades get few
    values, the top one (0.1 .. 1) most. Plus 0 and 1.
    """
    linear_bits = total_bits - 1 - max_exponent_bits      # fraction bits that need no exponent indicator
    if max_exponent_bits < 1 or linear_bits < 0:
        raise ValueError(f"need 1 <= max_exponent_bits <= total_bits - 1, got {max_exponent_bits}, {total_bits}")
    values = []

    def decade(e: int, n: int):
        edges = torch.linspace(0.1, 1, n + 1)                           # float32, as bitsandbytes
        mids = (edges[:-1] + edges[1:]) / 2                             # (n,)
        v = (10 ** (e - max_exponent_bits + 1)) * mids
        values.extend(v.tolist() + (-v).tolist())

    for e in range(max_exponent_bits):
        decade(e, 2 ** (e + linear_bits))
    if 2 ** linear_bits - 1 > 0:                                        # leftover codes go to the top decade
        decade(max_exponent_bits - 1, 2 ** linear_bits - 1)
    values += [0.0, 1.0]
    return torch.tensor(sorted(values), dtype=torch.float32)            # (2^total_bits,)


# --- blockwise quantization ----------------------------------------------------------------------------------


def _check_input(w: torch.Tensor, blocksize: int) -> torch.Tensor:
    if not isinstance(w, torch.Tensor):
        raise TypeError(f"expected a torch.Tensor, got {type(w).__name__}")
    if w.dtype not in (torch.float32, torch.float16, torch.bfloat16):
        raise TypeError(f"NF4 quantizes float32/float16/bfloat16 weights, got {w.dtype}: convert with .float()")
    if w.numel() == 0:
        raise ValueError("cannot quantize an empty tensor")
    if not isinstance(blocksize, int) or blocksize < 1:
        raise ValueError(f"blocksize must be a positive integer, got {blocksize!r}")
    if not bool(torch.isfinite(w).all()):
        raise ValueError("weights contain NaN or inf: a block's absmax would be meaningless")
    return w.detach().reshape(-1).float()                               # (n,) row-major


def _blocks(x: torch.Tensor, blocksize: int) -> list[torch.Tensor]:
    """x (n,) as full blocks (n // blocksize, blocksize) plus, if any, the partial last block (1, rem)."""
    full = x.numel() // blocksize * blocksize
    parts = [x[:full].reshape(-1, blocksize)]
    if full < x.numel():
        parts.append(x[full:].reshape(1, -1))
    return parts


def _per_block(values: torch.Tensor, per_block: torch.Tensor, blocksize: int) -> torch.Tensor:
    """Multiply values (n,) by one number per block of `blocksize` consecutive values."""
    return values * per_block.repeat_interleave(blocksize)[:values.numel()]


def quantize_blockwise_8bit(x: torch.Tensor, code: torch.Tensor | None = None, blocksize: int = 256):
    """8-bit blockwise quantization as bitsandbytes' CPU kernel does it: (codes uint8 (n,), absmax float32 (blocks,)).

    Normalise each block by its absmax, snap to the nearest of 65,536 points of [-1, 1], take that point's nearest
    code (a tie going to the lower code).
    """
    x = _check_input(x, blocksize)
    code = dynamic_map() if code is None else code.float()               # (256,) sorted
    absmax = torch.cat([b.abs().amax(dim=1) for b in _blocks(x, blocksize)])          # (blocks,)
    inv = 1.0 / absmax                                                   # inf for an all-zero block
    v = _per_block(x, inv, blocksize).clamp(-1, 1)                       # (n,) normalised
    j = ((v + 1.0) * 0.5 * (LUT_POINTS - 1) + 0.5).to(torch.int64)      # nearest grid point, 0 .. 65535
    grid = -1.0 + (2.0 * j.float()) / (LUT_POINTS - 1)                   # its value, float32
    mids = 0.5 * (code[:-1] + code[1:])                                  # (255,)
    q = torch.searchsorted(mids, grid, side="left")                      # number of midpoints below the point
    zero_block = (absmax == 0).repeat_interleave(blocksize)[:x.numel()]
    q = torch.where(zero_block, 0, q)
    return q.to(torch.uint8), absmax


def dequantize_blockwise_8bit(q: torch.Tensor, absmax: torch.Tensor, code: torch.Tensor | None = None,
                              blocksize: int = 256) -> torch.Tensor:
    """code[q] · absmax of q's block, float32 (n,)."""
    code = dynamic_map() if code is None else code.float()
    return _per_block(code[q.reshape(-1).long()], absmax, blocksize)


@dataclass
class NF4Tensor:
    """A weight tensor in NF4: packed 4-bit codes plus per-block absmax (plain or double-quantized)."""

    packed: torch.Tensor                     # uint8 (ceil(n / 2),): code of value 2i in the high nibble, 2i+1 low
    shape: torch.Size
    dtype: torch.dtype
    blocksize: int = 64
    absmax: torch.Tensor | None = None       # float32 (blocks,), without double quantization
    absmax_codes: torch.Tensor | None = None     # uint8 (blocks,): dynamic-map codes of absmax - offset
    absmax_scales: torch.Tensor | None = None    # float32 (ceil(blocks / dq_blocksize),)
    absmax_offset: torch.Tensor | None = None    # float32 (): the mean absmax
    dq_blocksize: int = 256

    @property
    def double_quant(self) -> bool:
        return self.absmax_codes is not None

    @property
    def numel(self) -> int:
        return math.prod(self.shape)

    def block_absmax(self) -> torch.Tensor:
        """The per-block absmax the codes are scaled by, float32 (blocks,) (decoded when double-quantized)."""
        if not self.double_quant:
            return self.absmax
        return dequantize_blockwise_8bit(self.absmax_codes, self.absmax_scales, blocksize=self.dq_blocksize) \
            + self.absmax_offset

    def codes(self) -> torch.Tensor:
        """The 4-bit code indices, int64 (n,)."""
        hi, lo = self.packed >> 4, self.packed & 0xF
        return torch.stack([hi, lo], dim=1).reshape(-1)[:self.numel].long()

    @property
    def nbytes(self) -> int:
        """Bytes of everything stored per tensor (the constant 16- and 256-entry code tables excluded)."""
        parts = [self.packed, self.absmax, self.absmax_codes, self.absmax_scales, self.absmax_offset]
        return sum(t.numel() * t.element_size() for t in parts if t is not None)

    def bits_per_parameter(self) -> float:
        """Measured storage: 8 · nbytes / number of weights."""
        return 8 * self.nbytes / self.numel


def quantize_nf4(w: torch.Tensor, blocksize: int = 64, double_quant: bool = False,
                 dq_blocksize: int = 256) -> NF4Tensor:
    """NF4 blockwise quantization of `w` (any shape, flattened row-major), optionally with double quantization."""
    x = _check_input(w, blocksize)                                       # (n,)
    code = nf4_codebook()                                                # (16,)
    mids = (code[:-1] + code[1:]) / 2                                    # (15,)
    absmax, normed = [], []
    for i, b in enumerate(_blocks(x, blocksize)):                        # b (blocks, blocksize) or (1, rem)
        am = b.abs().amax(dim=1)                                         # (blocks,)
        safe = am.clamp(min=1e-38)[:, None]                              # an all-zero block normalises to 0
        normed.append((b * (1.0 / safe) if i == 0 else b / safe).clamp(-1, 1).reshape(-1))
        absmax.append(am)
    absmax, v = torch.cat(absmax), torch.cat(normed)                     # (blocks,), (n,)
    q = torch.bucketize(v, mids)                                         # nearest code; on a midpoint, the lower
    if q.numel() % 2:
        q = torch.cat([q, torch.bucketize(torch.zeros(1), mids)])        # pad with the code of 0
    packed = ((q[0::2] << 4) | q[1::2]).to(torch.uint8)                  # (ceil(n / 2),)
    out = NF4Tensor(packed, torch.Size(w.shape), w.dtype, blocksize, dq_blocksize=dq_blocksize)
    if not double_quant:
        out.absmax = absmax
        return out
    out.absmax_offset = absmax.mean()                                    # absmax > 0: centre it to use both signs
    out.absmax_codes, out.absmax_scales = quantize_blockwise_8bit(absmax - out.absmax_offset,
                                                                  blocksize=dq_blocksize)
    return out


def dequantize_nf4(q: NF4Tensor) -> torch.Tensor:
    """code[index] · absmax of the block, in float32, reshaped and cast back to the original dtype."""
    if not isinstance(q, NF4Tensor):
        raise TypeError(f"expected an NF4Tensor from quantize_nf4, got {type(q).__name__}")
    values = nf4_codebook()[q.codes()]                                   # (n,) in [-1, 1]
    return _per_block(values, q.block_absmax(), q.blocksize).reshape(q.shape).to(q.dtype)


def bits_per_parameter(blocksize: int = 64, double_quant: bool = False, dq_blocksize: int = 256) -> float:
    """Closed-form storage per weight: 4 + 32/blocksize, or 4 + 8/blocksize + 32/(blocksize · dq_blocksize)."""
    if blocksize < 1 or dq_blocksize < 1:
        raise ValueError("block sizes must be positive")
    if double_quant:
        return 4 + 8 / blocksize + 32 / (blocksize * dq_blocksize)
    return 4 + 32 / blocksize
