"""Affine (uniform) quantization: q = clamp(round(x / s) + z, qmin, qmax), x̂ = s (q - z).

One `QSpec` says *how* to quantize (bits, symmetric or not, signed or not, granularity, how the range is
chosen); `QSpec.calibrate(x)` looks at a tensor and returns `QParams` (the scales and zero-points), which
quantize, dequantize and fake-quantize. Granularity:

    per-tensor    one (s, z) for the whole tensor                      scale shape ()
    per-channel   one (s, z) per index along `axis`                   scale shape (1, .., C, .., 1)
    per-group     one (s, z) per `group_size` consecutive values       scale shape x.shape with
                  along `axis` (the input dimension of a weight)      shape[axis] -> shape[axis] // group_size

The arithmetic follows PyTorch's observers and `fake_quantize_per_*_affine` (Jacob et al., 2018):
the range is widened to contain 0 (so that 0 — padding, ReLU zeros — is exact), symmetric scales are
max|x| / ((qmax - qmin) / 2), asymmetric ones (max - min) / (qmax - qmin), rounding is half-to-even, and
x / s is computed as x * (1 / s) in float32 — so the unit tests compare our codes with torch's exactly.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch

GRANULARITIES = ("tensor", "channel", "group")
METHODS = ("minmax", "percentile", "mse")


def qrange(bits: int, signed: bool) -> tuple[int, int]:
    """The integer grid of a `bits`-bit code: signed [-2^(b-1), 2^(b-1) - 1], unsigned [0, 2^b - 1]."""
    if not isinstance(bits, int) or not 2 <= bits <= 8:
        raise ValueError(f"bits must be an integer in 2..8, got {bits!r}")
    return (-(1 << (bits - 1)), (1 << (bits - 1)) - 1) if signed else (0, (1 << bits) - 1)


def _check_finite(x: torch.Tensor) -> torch.Tensor:
    if not isinstance(x, torch.Tensor):
        x = torch.as_tensor(x)
    if not x.is_floating_point():
        raise TypeError(f"expected a floating-point tensor, got {x.dtype}")
    if x.numel() == 0:
        raise ValueError("cannot quantize an empty tensor")
    if not bool(torch.isfinite(x).all()):
        raise ValueError("tensor contains NaN or inf: clean it before choosing a quantization range")
    return x


def scale_zero_point(lo, hi, bits: int = 8, symmetric: bool = False, signed: bool = True):
    """(scale, zero_point) that map the range [lo, hi] (widened to contain 0) onto the `bits`-bit grid.

    lo, hi: floats or tensors (one range per channel/group). Symmetric: z = 0 for signed codes (the
    middle of the grid for unsigned ones) and s = max(|lo|, |hi|) / ((qmax - qmin) / 2). Asymmetric:
    s = (hi - lo) / (qmax - qmin) and z = qmin - round(lo / s), so that lo and hi land on the grid ends.
    Raises ValueError on an empty range (lo == hi == 0), which has no meaningful scale.
    """
    qmin, qmax = qrange(bits, signed)
    lo = torch.as_tensor(lo, dtype=torch.float32)
    hi = torch.as_tensor(hi, dtype=torch.float32)
    if bool((lo > hi).any()):
        raise ValueError("range has lo > hi")
    lo, hi = torch.clamp(lo, max=0.0), torch.clamp(hi, min=0.0)      # the range always contains 0
    if bool((hi - lo == 0).any()):
        raise ValueError("zero range (every value is 0): there is no scale to choose")
    if symmetric:
        amax = torch.maximum(-lo, hi)
        scale = amax / ((qmax - qmin) / 2)
        zero_point = torch.full_like(scale, 0 if signed else (qmin + qmax + 1) // 2, dtype=torch.int32)
    else:
        scale = (hi - lo) / (qmax - qmin)
        zero_point = torch.clamp(qmin - torch.round(lo / scale), qmin, qmax).to(torch.int32)
    return scale, zero_point


def _expand(t: torch.Tensor, axis: int | None, group_size: int | None) -> torch.Tensor:
    """Per-group parameters repeated to the tensor's shape along `axis` (others broadcast as they are)."""
    return t if group_size is None else t.repeat_interleave(group_size, dim=axis)


@dataclass
class QParams:
    """Scales and zero-points of one quantized tensor, with the grid they index (see module docstring)."""

    scale: torch.Tensor           # float32, broadcastable (per-group: repeated along `axis` on use)
    zero_point: torch.Tensor      # int32, same shape as scale
    bits: int = 8
    signed: bool = True
    symmetric: bool = False
    axis: int | None = None       # None: per-tensor
    group_size: int | None = None

    @property
    def qmin(self) -> int:
        return qrange(self.bits, self.signed)[0]

    @property
    def qmax(self) -> int:
        return qrange(self.bits, self.signed)[1]

    @property
    def step(self) -> torch.Tensor:
        """The quantization step Δ (= scale), broadcast like the tensor."""
        return _expand(self.scale, self.axis, self.group_size)

    def quantize(self, x: torch.Tensor) -> torch.Tensor:
        """Integer codes, int32: clamp(round(x * (1/s)) + z, qmin, qmax)."""
        x = _check_finite(x).to(torch.float32)
        s = _expand(self.scale, self.axis, self.group_size)
        z = _expand(self.zero_point, self.axis, self.group_size)
        return torch.clamp(torch.round(x * (1.0 / s)) + z, self.qmin, self.qmax).to(torch.int32)

    def dequantize(self, q: torch.Tensor) -> torch.Tensor:
        """Real values s (q - z), float32."""
        s = _expand(self.scale, self.axis, self.group_size)
        z = _expand(self.zero_point, self.axis, self.group_size)
        return (q.to(torch.int32) - z).to(torch.float32) * s

    def fake_quantize(self, x: torch.Tensor) -> torch.Tensor:
        """dequantize(quantize(x)): x snapped to the grid, still a float tensor."""
        return self.dequantize(self.quantize(x))

    def overhead_bits(self, numel: int, scale_bits: int = 32) -> float:
        """Bits per value spent on the parameters: one scale each (`scale_bits`), plus a `bits`-bit
        zero-point each when asymmetric."""
        n = self.scale.numel()
        return n * (scale_bits + (0 if self.symmetric else self.bits)) / numel


def _reduce_dims(x: torch.Tensor, axis: int | None) -> tuple[int, ...]:
    return tuple(range(x.ndim)) if axis is None else tuple(d for d in range(x.ndim) if d != axis)


def _grouped(x: torch.Tensor, axis: int, group_size: int) -> torch.Tensor:
    """View x with `axis` split into (n_groups, group_size); the group members are at axis + 1."""
    n = x.shape[axis]
    if group_size < 1 or n % group_size:
        raise ValueError(f"group_size {group_size} must divide dimension {axis} of size {n}")
    return x.reshape(*x.shape[:axis], n // group_size, group_size, *x.shape[axis + 1:])


def _minmax(x: torch.Tensor, axis: int | None, group_size: int | None):
    if group_size is not None:
        g = _grouped(x, axis, group_size)
        return g.amin(dim=axis + 1), g.amax(dim=axis + 1)
    if axis is None:
        return x.amin(), x.amax()
    dims = _reduce_dims(x, axis)
    return x.amin(dim=dims, keepdim=True), x.amax(dim=dims, keepdim=True)


def _percentile(x: torch.Tensor, p: float, axis: int | None, group_size: int | None):
    """The (100-p)th and p-th percentiles instead of min and max: clip the rare extremes."""
    if not 50 < p <= 100:
        raise ValueError(f"percentile must be in (50, 100], got {p}")
    if group_size is not None:
        g = _grouped(x, axis, group_size).movedim(axis + 1, -1)
        lo, hi = torch.quantile(g, 1 - p / 100, dim=-1), torch.quantile(g, p / 100, dim=-1)
        return lo, hi
    if axis is None:
        flat = x.reshape(-1).double()
        return torch.quantile(flat, 1 - p / 100).float(), torch.quantile(flat, p / 100).float()
    moved = x.movedim(axis, 0).reshape(x.shape[axis], -1)
    shape = [1] * x.ndim
    shape[axis] = x.shape[axis]
    lo = torch.quantile(moved, 1 - p / 100, dim=1).reshape(shape)
    hi = torch.quantile(moved, p / 100, dim=1).reshape(shape)
    return lo, hi


@dataclass
class QSpec:
    """How to quantize a tensor. `calibrate(x)` → `QParams`.

    bits 2..8; symmetric (z = 0) or asymmetric (scale + zero-point); signed or unsigned codes;
    granularity "tensor" | "channel" (one range per index along `axis`) | "group" (`group_size` values
    along `axis`); method "minmax" | "percentile" (clip at the `percentile`-th percentile) | "mse"
    (search the clipping ratio that minimises the fake-quantization MSE, per channel/group).
    """

    bits: int = 8
    symmetric: bool = False
    signed: bool = True
    granularity: str = "tensor"
    axis: int = 0
    group_size: int | None = None
    method: str = "minmax"
    percentile: float = 99.99
    mse_grid: int = 100

    def __post_init__(self):
        qrange(self.bits, self.signed)
        if self.granularity not in GRANULARITIES:
            raise ValueError(f"granularity must be one of {GRANULARITIES}, got {self.granularity!r}")
        if self.method not in METHODS:
            raise ValueError(f"method must be one of {METHODS}, got {self.method!r}")
        if self.granularity == "group" and (self.group_size is None or self.group_size < 1):
            raise ValueError("granularity 'group' needs group_size >= 1")

    def _axis(self, x: torch.Tensor) -> int | None:
        if self.granularity == "tensor":
            return None
        if not -x.ndim <= self.axis < x.ndim:
            raise ValueError(f"axis {self.axis} out of range for a {x.ndim}-d tensor")
        return self.axis % x.ndim

    def range(self, x: torch.Tensor):
        """(lo, hi) per tensor / channel / group by the chosen method (minmax or percentile)."""
        x = _check_finite(x).to(torch.float32)
        axis = self._axis(x)
        group = self.group_size if self.granularity == "group" else None
        if self.method == "percentile":
            return _percentile(x, self.percentile, axis, group)
        return _minmax(x, axis, group)

    def _params(self, lo, hi, axis, group) -> QParams:
        s, z = scale_zero_point(lo, hi, self.bits, self.symmetric, self.signed)
        return QParams(s, z, self.bits, self.signed, self.symmetric, axis, group)

    def calibrate(self, x: torch.Tensor) -> QParams:
        """Scales and zero-points for `x` (its range by `method`)."""
        x = _check_finite(x).to(torch.float32)
        axis = self._axis(x)
        group = self.group_size if self.granularity == "group" else None
        lo, hi = self.range(x)
        if self.method != "mse":
            return self._params(lo, hi, axis, group)
        return self._mse_search(x, lo, hi, axis, group)

    def _mse_search(self, x, lo, hi, axis, group) -> QParams:
        """Shrink the min/max range by ratios r in (0, 1]; keep, per channel/group, the r with least MSE."""
        best_err, best_lo, best_hi = None, lo.clone(), hi.clone()
        for i in range(self.mse_grid):
            r = 1.0 - i / self.mse_grid                               # 1.00, 0.99, …, 0.01
            lo_r, hi_r = lo * r, hi * r
            qp = self._params(lo_r, hi_r, axis, group)
            err = (qp.fake_quantize(x) - x) ** 2
            if group is not None:
                err = _grouped(err, axis, group).sum(dim=axis + 1)
            elif axis is None:
                err = err.sum()
            else:
                err = err.sum(dim=_reduce_dims(x, axis), keepdim=True)
            if best_err is None:
                best_err = err
                continue
            better = err < best_err
            best_err = torch.where(better, err, best_err)
            best_lo, best_hi = torch.where(better, lo_r, best_lo), torch.where(better, hi_r, best_hi)
        return self._params(best_lo, best_hi, axis, group)


def quantize(x: torch.Tensor, spec: QSpec | None = None, **kw) -> tuple[torch.Tensor, QParams]:
    """Calibrate on `x` and quantize it: `(codes, params)`. `quantize(w, bits=4, symmetric=True)`."""
    qp = (spec or QSpec(**kw)).calibrate(x)
    return qp.quantize(x), qp


def fake_quantize(x: torch.Tensor, spec: QSpec | None = None, **kw) -> torch.Tensor:
    """x snapped to the grid its own range defines (calibrate + quantize + dequantize)."""
    return (spec or QSpec(**kw)).calibrate(x).fake_quantize(x)


# --- quantization error ------------------------------------------------------------------------------


def mse(x: torch.Tensor, x_hat: torch.Tensor) -> float:
    """Mean squared error between the original and the dequantized tensor."""
    return float(((x.double() - x_hat.double()) ** 2).mean())


def sqnr_db(x: torch.Tensor, x_hat: torch.Tensor) -> float:
    """Signal-to-quantization-noise ratio, 10 log10(E[x²] / E[(x - x̂)²]), in dB."""
    noise = mse(x, x_hat)
    return math.inf if noise == 0 else 10 * math.log10(float((x.double() ** 2).mean()) / noise)


def uniform_noise_mse(step) -> float:
    """Δ²/12: the variance of rounding noise uniform on [-Δ/2, Δ/2] (Bennett, 1948; Widrow, 1956)."""
    return float(step) ** 2 / 12
