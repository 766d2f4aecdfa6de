"""Quantization-aware training with the straight-through estimator, and post-training quantization, static and dynamic.

Rounding is a staircase: its derivative is 0 almost everywhere and undefined at the steps, so a loss computed
through quantized weights gives gradient descent nothing to follow (`rounding_gradients` measures it). The
straight-through estimator (STE; Bengio, Léonard & Courville, 2013) uses round(x) forward and pretends it was the
identity backward. Quantization-aware training (Jacob et al., 2018, §3) fake-quantizes weights and activations in
the forward pass — x̂ = s (clamp(round(x/s) + z, qmin, qmax) - z), still float — and trains through it with the
STE, so the network learns weights that survive the rounding. Like PyTorch's `fake_quantize_per_*_affine`, the
gradient is the *clipped* STE: 1 where the rounded code falls inside [qmin, qmax], 0 where it was clamped.

`prepare_qat` swaps every nn.Linear / nn.Conv2d for a version that fake-quantizes its weight (range recomputed
from the weight at every call) and, optionally, its input activation. The activation range is either
    static   observed (min / max) on calibration batches by `calibrate`, then frozen: fixed at inference;
    dynamic  computed from each batch at run time (costs a min/max pass per call, adapts to every input).
`ptq` is the same model without training: post-training quantization (PTQ), static when given calibration data.
"""
from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from torch import nn

from .affine import QParams, QSpec, _expand, scale_zero_point

# --- the straight-through estimator --------------------------------------------------------------------------


class RoundSTE(torch.autograd.Function):
    """round(x) forward (half to even, as torch.round); gradient passed through unchanged backward."""

    @staticmethod
    def forward(ctx, x):
        return torch.round(x)

    @staticmethod
    def backward(ctx, grad):
        return grad


def round_ste(x: torch.Tensor) -> torch.Tensor:
    return RoundSTE.apply(x)


class FakeQuantizeSTE(torch.autograd.Function):
    """x̂ = qp.fake_quantize(x) forward; backward the clipped STE: grad where round(x/s) + z is in [qmin, qmax],
    else 0."""

    @staticmethod
    def forward(ctx, x, qp: QParams):
        code = torch.round(x.float() * (1.0 / qp.step)) + _expand(qp.zero_point, qp.axis, qp.group_size)
        ctx.save_for_backward((code >= qp.qmin) & (code <= qp.qmax))
        return qp.fake_quantize(x)

    @staticmethod
    def backward(ctx, grad):
        inside, = ctx.saved_tensors
        return grad * inside, None


def fake_quantize_ste(x: torch.Tensor, qp: QParams) -> torch.Tensor:
    """Fake-quantize `x` on the grid `qp`, differentiably (clipped STE)."""
    return FakeQuantizeSTE.apply(x, qp)


class FakeQuant(nn.Module):
    """Fake-quantizes its input with a `QSpec`, STE gradients.

    dynamic=True: the range comes from each input (weights: the current weight; activations: the batch).
    dynamic=False: a static range — min / max over every input seen while `observing`, then `freeze()` fixes it.
    """

    def __init__(self, spec: QSpec, dynamic: bool = False):
        super().__init__()
        if not isinstance(spec, QSpec):
            raise TypeError(f"spec must be a QSpec, got {type(spec).__name__}")
        if not dynamic and (spec.granularity == "group" or spec.method == "mse"):
            raise ValueError("a static range is observed per tensor or per channel by min/max or percentile; "
                             "use dynamic=True for per-group or MSE-searched ranges")
        self.spec, self.dynamic = spec, dynamic
        self.observing = True
        self.lo = self.hi = None            # observed range (static)
        self.qparams: QParams | None = None

    def reset(self):
        """Forget the observed range and observe again."""
        self.lo = self.hi = self.qparams = None
        self.observing = True

    def freeze(self):
        """Stop observing: the range seen so far is the one used from now on."""
        if not self.dynamic and self.qparams is None:
            raise RuntimeError("nothing observed yet: run calibration batches before freezing")
        self.observing = False

    @torch.no_grad()
    def observe(self, x: torch.Tensor):
        lo, hi = self.spec.range(x)
        if self.lo is not None:
            lo, hi = torch.minimum(lo, self.lo), torch.maximum(hi, self.hi)
        self.lo, self.hi = lo, hi
        axis = None if self.spec.granularity == "tensor" else self.spec.axis % x.ndim
        s, z = scale_zero_point(lo, hi, self.spec.bits, self.spec.symmetric, self.spec.signed)
        self.qparams = QParams(s, z, self.spec.bits, self.spec.signed, self.spec.symmetric, axis)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.dynamic:
            return fake_quantize_ste(x, self.spec.calibrate(x.detach()))
        if self.observing:
            self.observe(x.detach())
        if self.qparams is None:
            raise RuntimeError("static FakeQuant has no range: observe calibration batches first (calibrate)")
        return fake_quantize_ste(x, self.qparams)

    def extra_repr(self) -> str:
        s = self.spec
        kind = "dynamic" if self.dynamic else ("observing" if self.observing else "frozen")
        return f"bits={s.bits}, symmetric={s.symmetric}, granularity={s.granularity}, {kind}"


# --- fake-quantized layers ----------------------------------------------------------------------------------

WEIGHT_SPEC = QSpec(bits=8, symmetric=True, granularity="channel", axis=0)   # per output channel


class _QATMixin:
    """Fake-quantized weight (dynamic: from the weight itself) and optionally input activation."""

    def _init_quant(self, weight_spec: QSpec, act_spec: QSpec | None, dynamic_act: bool):
        self.weight_fq = FakeQuant(weight_spec, dynamic=True)
        self.act_fq = None if act_spec is None else FakeQuant(act_spec, dynamic=dynamic_act)

    def _quantized(self, x):
        x = x if self.act_fq is None else self.act_fq(x)
        return x, self.weight_fq(self.weight)


class QATLinear(_QATMixin, nn.Linear):
    """nn.Linear whose weight (and input, with an act_spec) are fake-quantized."""

    def __init__(self, in_features, out_features, bias=True, weight_spec: QSpec = WEIGHT_SPEC,
                 act_spec: QSpec | None = None, dynamic_act: bool = False):
        super().__init__(in_features, out_features, bias)
        self._init_quant(weight_spec, act_spec, dynamic_act)

    @classmethod
    def from_float(cls, m: nn.Linear, weight_spec: QSpec = WEIGHT_SPEC, act_spec: QSpec | None = None,
                   dynamic_act: bool = False) -> "QATLinear":
        q = cls(m.in_features, m.out_features, m.bias is not None, weight_spec, act_spec, dynamic_act)
        q.load_state_dict(m.state_dict())
        return q.to(m.weight.device)

    def forward(self, x):                       # (B, in) → (B, out)
        x, w = self._quantized(x)
        return F.linear(x, w, self.bias)


class QATConv2d(_QATMixin, nn.Conv2d):
    """nn.Conv2d whose weight (and input, with an act_spec) are fake-quantized."""

    def __init__(self, *args, weight_spec: QSpec = WEIGHT_SPEC, act_spec: QSpec | None = None,
                 dynamic_act: bool = False, **kw):
        super().__init__(*args, **kw)
        self._init_quant(weight_spec, act_spec, dynamic_act)

    @classmethod
    def from_float(cls, m: nn.Conv2d, weight_spec: QSpec = WEIGHT_SPEC, act_spec: QSpec | None = None,
                   dynamic_act: bool = False) -> "QATConv2d":
        q = cls(m.in_channels, m.out_channels, m.kernel_size, stride=m.stride, padding=m.padding,
                dilation=m.dilation, groups=m.groups, bias=m.bias is not None, padding_mode=m.padding_mode,
                weight_spec=weight_spec, act_spec=act_spec, dynamic_act=dynamic_act)
        q.load_state_dict(m.state_dict())
        return q.to(m.weight.device)

    def forward(self, x):                       # (B, C, H, W) → (B, O, H', W')
        x, w = self._quantized(x)
        return self._conv_forward(x, w, self.bias)


def prepare_qat(model: nn.Module, weight_spec: QSpec = WEIGHT_SPEC, act_spec: QSpec | None = None,
                dynamic_act: bool = False) -> nn.Module:
    """A copy of `model` with every nn.Linear / nn.Conv2d fake-quantized (weights; inputs too given act_spec)."""
    if not isinstance(model, nn.Module):
        raise TypeError(f"expected an nn.Module, got {type(model).__name__}")
    model = copy.deepcopy(model)
    swapped = _swap(model, weight_spec, act_spec, dynamic_act)
    if swapped == 0:
        raise ValueError("the model has no nn.Linear or nn.Conv2d layer to quantize")
    return model


def _swap(module: nn.Module, weight_spec, act_spec, dynamic_act) -> int:
    n = 0
    for name, child in module.named_children():
        cls = {nn.Linear: QATLinear, nn.Conv2d: QATConv2d}.get(type(child))
        if cls is not None:
            setattr(module, name, cls.from_float(child, weight_spec, act_spec, dynamic_act))
            n += 1
        elif not isinstance(child, _QATMixin):
            n += _swap(child, weight_spec, act_spec, dynamic_act)
    return n


def _static_fakequants(model: nn.Module) -> list[FakeQuant]:
    return [m for m in model.modules() if isinstance(m, FakeQuant) and not m.dynamic]


@torch.no_grad()
def calibrate(model: nn.Module, batches) -> nn.Module:
    """Observe the static activation ranges on `batches` (an iterable of inputs), then freeze them."""
    fqs = _static_fakequants(model)
    for fq in fqs:
        fq.reset()
    was_training = model.training
    model.eval()
    for x in batches:
        model(x)
    model.train(was_training)
    for fq in fqs:
        fq.freeze()
    return model


def ptq(model: nn.Module, weight_spec: QSpec = WEIGHT_SPEC, act_spec: QSpec | None = None,
        calib=None) -> nn.Module:
    """Post-training quantization, no training: static activation ranges when `calib` batches are given,
    dynamic (per batch at run time) otherwise. Returns a fake-quantized copy in eval mode."""
    q = prepare_qat(model, weight_spec, act_spec, dynamic_act=calib is None).eval()
    if calib is not None and act_spec is not None:
        calibrate(q, calib)
    return q


# --- why the STE: the true gradient through rounding ------------------------------------------------------


def _cosine(a: torch.Tensor, b: torch.Tensor) -> float:
    a, b = a.double().reshape(-1), b.double().reshape(-1)
    denom = float(a.norm() * b.norm())
    return 0.0 if denom == 0 else float(a @ b) / denom


def rounding_gradients(loss_fn, w: torch.Tensor, spec: QSpec, eps: float = 1e-4) -> dict:
    """d loss(fake_quantize(w)) / d w three ways, on the grid `spec` calibrates on `w` (then held fixed).

    loss_fn: tensor shaped like w → scalar. Returns
        "fd"     central finite differences through real rounding, (loss(ŵ(w + ε e_i)) - loss(ŵ(w - ε e_i))) / 2ε:
                 exactly 0 unless w_i is within ε of a rounding threshold — then about Δ·g / 2ε, huge
        "ste"    autograd through the clipped STE
        "float"  autograd of loss(w), no quantization
    plus "zero_fraction" (of fd), "cos_ste_float", "cos_fd_float" (cosine similarities).
    """
    if w.numel() > 10_000:
        raise ValueError(f"finite differences need 2 loss evaluations per weight: use <= 10,000, got {w.numel()}")
    if not eps > 0:
        raise ValueError(f"eps must be > 0, got {eps}")
    w = w.detach().float()
    qp = spec.calibrate(w)

    def grad(f):
        v = w.clone().requires_grad_(True)
        loss_fn(f(v)).backward()
        return v.grad

    g_float, g_ste = grad(lambda v: v), grad(lambda v: fake_quantize_ste(v, qp))
    g_fd = torch.zeros(w.numel())
    with torch.no_grad():
        for i in range(w.numel()):
            up, down = w.clone().reshape(-1), w.clone().reshape(-1)
            up[i] += eps
            down[i] -= eps
            lu = float(loss_fn(qp.fake_quantize(up.reshape(w.shape))))
            ld = float(loss_fn(qp.fake_quantize(down.reshape(w.shape))))
            g_fd[i] = (lu - ld) / (2 * eps)
    g_fd = g_fd.reshape(w.shape)
    return {"fd": g_fd, "ste": g_ste, "float": g_float, "zero_fraction": float((g_fd == 0).float().mean()),
            "cos_ste_float": _cosine(g_ste, g_float), "cos_fd_float": _cosine(g_fd, g_float),
            "max_abs_fd": float(g_fd.abs().max()), "max_abs_float": float(g_float.abs().max())}


def threshold_distance(w: torch.Tensor, qp: QParams) -> torch.Tensor:
    """Distance from each value to the nearest rounding threshold between two codes of the grid (a half-integer
    code k + 1/2 with qmin <= k < qmax), in the units of w; inf where the nearest threshold is off the grid."""
    t = w.float() * (1.0 / qp.step) + _expand(qp.zero_point, qp.axis, qp.group_size)       # codes, unrounded
    k = torch.floor(t)
    on_grid = (k >= qp.qmin) & (k + 1 <= qp.qmax)
    return torch.where(on_grid, (t - k - 0.5).abs() * qp.step, torch.inf)
