"""Integer-only inference (Jacob et al., 2018, "Quantization and Training of Neural Networks for Efficient
Integer-Arithmetic-Only Inference"; gemmlowp / TFLite): a CNN whose inner loops touch only integers.

For a layer y = W x + b with x = s_x (q_x - z_x), W = s_w q_w (symmetric weights, z_w = 0), y = s_y (q_y - z_y):

    acc   = Σ q_w (q_x - z_x) + q_b              int8 × int8 → int32, bias q_b = round(b / (s_x s_w)) in int32
    q_y   = z_y + round(M · acc),  M = s_x s_w / s_y   (one M per output channel with per-channel weights)
    M     = M0 · 2^-(31 + shift), M0 a 31-bit integer, so round(M · acc) = (acc · M0 + 2^(30+shift)) >> (31+shift)

ReLU is a clamp at z_y, max pooling is a max over codes (both commute with the monotone affine map).
`IntegerCNN.from_float` turns a float model (a `plan`: pad / conv / linear / ReLU / max-pool / flatten steps)
plus calibration data into such a network; `fake_quant_forward` runs the same quantized model in float64
(quantize → dequantize around float ops), the simulation QAT and most toolkits use.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from .affine import QParams, QSpec, qrange

# --- the integer kernels -------------------------------------------------------------------------------


def quantize_multiplier(m: float) -> tuple[int, int]:
    """(M0, shift) with m ≈ M0 · 2^-(31 + shift) and 2^30 <= M0 < 2^31 (TFLite's QuantizeMultiplier)."""
    if not 0 < m < 2 ** 30:
        raise ValueError(f"multiplier must be positive and finite, got {m}")
    mant, exp = math.frexp(m)                  # m = mant · 2^exp, mant in [0.5, 1)
    m0 = round(mant * (1 << 31))
    if m0 == 1 << 31:                          # mant rounded up to 1.0
        m0 //= 2
        exp += 1
    return m0, -exp


def requantize(acc: torch.Tensor, m0, shift, zero_point: int, qmin: int, qmax: int) -> torch.Tensor:
    """int32 accumulators → output codes: clamp(z + round(acc · M0 / 2^(31+shift)), qmin, qmax).

    m0, shift: ints or integer tensors broadcastable to `acc` (per channel). Rounds half up, with an
    int64 product and an arithmetic right shift — no floating point.
    """
    total = 31 + torch.as_tensor(shift, dtype=torch.int64)
    if bool((total < 1).any()) or bool((total > 62).any()):
        raise ValueError("shift out of range")
    prod = acc.to(torch.int64) * torch.as_tensor(m0, dtype=torch.int64)
    nudge = torch.ones_like(total) << (total - 1)
    out = ((prod + nudge) >> total) + zero_point
    return torch.clamp(out, qmin, qmax).to(torch.int32)


def int_conv2d(xq: torch.Tensor, x_zp: int, wq: torch.Tensor, bias_q: torch.Tensor | None = None,
               stride: int = 1) -> torch.Tensor:
    """int32 accumulators of a convolution: Σ q_w (q_x - z_x) (+ q_b), via im2col and an int32 GEMM.

    xq (N, C, H, W) integer codes; wq (O, C, kh, kw) symmetric int8 codes; bias_q (O,) int32.
    """
    n, c, h, w = xq.shape
    o, c2, kh, kw = wq.shape
    if c != c2:
        raise ValueError(f"input has {c} channels, weight expects {c2}")
    x = xq.to(torch.int32) - x_zp                                          # (N, C, H, W)
    cols = x.unfold(2, kh, stride).unfold(3, kw, stride)                   # (N, C, OH, OW, kh, kw)
    oh, ow = cols.shape[2], cols.shape[3]
    cols = cols.permute(0, 2, 3, 1, 4, 5).reshape(n * oh * ow, c * kh * kw)  # (N·OH·OW, C·kh·kw)
    acc = cols @ wq.reshape(o, -1).to(torch.int32).T                       # (N·OH·OW, O) int32
    if bias_q is not None:
        acc = acc + bias_q.to(torch.int32)
    return acc.reshape(n, oh, ow, o).permute(0, 3, 1, 2).contiguous()       # (N, O, OH, OW)


def int_linear(xq: torch.Tensor, x_zp: int, wq: torch.Tensor, bias_q: torch.Tensor | None = None) -> torch.Tensor:
    """int32 accumulators of a linear layer: (q_x - z_x) @ q_wᵀ (+ q_b). xq (N, in), wq (out, in)."""
    acc = (xq.to(torch.int32) - x_zp) @ wq.to(torch.int32).T                  # (N, out)
    return acc if bias_q is None else acc + bias_q.to(torch.int32)


def int_relu(q: torch.Tensor, zero_point: int) -> torch.Tensor:
    """ReLU on codes: real 0 is the code z, so max(q, z)."""
    return torch.clamp(q, min=zero_point)


def int_maxpool2d(q: torch.Tensor, k: int = 2) -> torch.Tensor:
    """k×k max pooling, stride k, on integer codes (N, C, H, W) — H and W divisible by k."""
    n, c, h, w = q.shape
    return q.reshape(n, c, h // k, k, w // k, k).amax(dim=(3, 5))


# --- a whole network ------------------------------------------------------------------------------------


def plan_of(model: nn.Module, pad: int = 0) -> list:
    """The steps of a plain CNN as a flat list: ("pad", p) · ("conv"|"linear", module, relu) · ("pool", k)
    · ("flatten",). A weight layer followed by nn.ReLU is fused with it (as every int8 engine does)."""
    mods = [m for m in model.modules() if not list(m.children())]
    steps = [("pad", pad)] if pad else []
    i = 0
    while i < len(mods):
        m = mods[i]
        relu = i + 1 < len(mods) and isinstance(mods[i + 1], nn.ReLU)
        if isinstance(m, nn.Conv2d):
            if m.stride != (1, 1) or m.padding != (0, 0) or m.groups != 1 or m.dilation != (1, 1):
                raise ValueError("plan_of supports plain stride-1, unpadded convolutions")
            steps.append(("conv", m, relu))
        elif isinstance(m, nn.Linear):
            steps.append(("linear", m, relu))
        elif isinstance(m, nn.MaxPool2d):
            steps.append(("pool", m.kernel_size if isinstance(m.kernel_size, int) else m.kernel_size[0]))
        elif isinstance(m, nn.Flatten):
            steps.append(("flatten",))
        elif isinstance(m, nn.ReLU):
            raise ValueError("a ReLU must follow a conv or linear layer")
        else:
            raise ValueError(f"unsupported module {type(m).__name__}")
        i += 2 if relu else 1
    return steps


@torch.no_grad()
def run_float(plan: list, x: torch.Tensor, record: list | None = None) -> torch.Tensor:
    """The float network the plan describes; appends each weight layer's (post-ReLU) output to `record`."""
    for step in plan:
        kind = step[0]
        if kind == "pad":
            x = F.pad(x, (step[1],) * 4)
        elif kind in ("conv", "linear"):
            m, relu = step[1], step[2]
            x = m(x)
            x = F.relu(x) if relu else x
            if record is not None:
                record.append(x)
        elif kind == "pool":
            x = F.max_pool2d(x, step[1])
        elif kind == "flatten":
            x = x.flatten(1)
    return x


@dataclass
class IntLayer:
    """One fused conv/linear (+ReLU) layer in integer form; scales are kept only to dequantize/report."""

    kind: str
    relu: bool
    wq: torch.Tensor           # int8 codes, (O, …)
    w: QParams                 # weight scales (per tensor or per output channel)
    bias_q: torch.Tensor       # int32, scale s_x · s_w
    x: QParams                 # input activation params (per tensor)
    y: QParams                 # output activation params (per tensor)
    m0: torch.Tensor           # (O,) int64 fixed-point multipliers
    shift: torch.Tensor        # (O,) int64


@dataclass
class IntegerCNN:
    """A quantized CNN: `forward_int` (uint8 image codes → int logits codes) uses integers only."""

    plan: list
    layers: list = field(default_factory=list)   # IntLayer per weight step, in order
    input: QParams | None = None

    @classmethod
    @torch.no_grad()
    def from_float(cls, model: nn.Module, calib: torch.Tensor, weight_spec: QSpec,
                   act_spec: QSpec = None, pad: int = 0) -> "IntegerCNN":
        """Quantize `model` statically: activation ranges from `calib` (min/max per tensor, including
        the input), weights by `weight_spec` (symmetric; per tensor or per output channel)."""
        act_spec = act_spec or QSpec(bits=8, symmetric=False, signed=False)
        if not weight_spec.symmetric:
            raise ValueError("integer kernels here assume symmetric weights (z_w = 0)")
        if weight_spec.granularity == "group":
            raise ValueError("per-group weights need one accumulator per group: not supported here")
        plan = plan_of(model, pad)
        outs: list = []
        run_float(plan, calib, outs)
        net = cls(plan)
        net.input = act_spec.calibrate(calib)
        x_qp = net.input
        k = 0
        for step in plan:
            if step[0] not in ("conv", "linear"):
                continue
            m, relu = step[1], step[2]
            w_qp = weight_spec.calibrate(m.weight.detach())
            y_qp = act_spec.calibrate(outs[k])
            s_w = w_qp.scale.reshape(-1).double()                      # (1,) or (O,)
            s_x, s_y = float(x_qp.scale), float(y_qp.scale)
            b = m.bias.detach().double() if m.bias is not None else torch.zeros(m.weight.shape[0], dtype=torch.float64)
            bias_q = torch.round(b / (s_x * s_w)).to(torch.int32)
            mult = (s_x * s_w / s_y).expand(m.weight.shape[0])
            pairs = [quantize_multiplier(float(v)) for v in mult]
            m0 = torch.tensor([p[0] for p in pairs], dtype=torch.int64)
            sh = torch.tensor([p[1] for p in pairs], dtype=torch.int64)
            net.layers.append(IntLayer(step[0], relu, w_qp.quantize(m.weight.detach()).to(torch.int8), w_qp,
                                       bias_q, x_qp, y_qp, m0, sh))
            x_qp = y_qp
            k += 1
        return net

    @torch.no_grad()
    def forward_int(self, xq: torch.Tensor, fuse_pool: bool = True) -> torch.Tensor:
        """Integer codes in, integer codes out (the last layer's output codes, int32).

        fuse_pool: a max-pool right after a conv is applied to the int32 accumulators *before*
        requantization — 4× fewer values to requantize, and the same codes, because requantize + ReLU is
        monotone non-decreasing in each channel (M > 0), so it commutes with max.
        """
        q, k, skip = xq.to(torch.int32), 0, False
        for i, step in enumerate(self.plan):
            kind = step[0]
            if skip:
                skip = False
                continue
            if kind == "pad":
                zp = int(self.input.zero_point)                        # real 0 is the code z
                q = F.pad(q, (step[1],) * 4, value=zp)
            elif kind in ("conv", "linear"):
                L = self.layers[k]
                zx = int(L.x.zero_point)
                if kind == "conv":
                    acc = int_conv2d(q, zx, L.wq, L.bias_q)            # (N, O, OH, OW) int32
                    m0, sh = L.m0.view(1, -1, 1, 1), L.shift.view(1, -1, 1, 1)
                    if fuse_pool and i + 1 < len(self.plan) and self.plan[i + 1][0] == "pool":
                        acc, skip = int_maxpool2d(acc, self.plan[i + 1][1]), True
                else:
                    acc = int_linear(q, zx, L.wq, L.bias_q)            # (N, out) int32
                    m0, sh = L.m0.view(1, -1), L.shift.view(1, -1)
                zy = int(L.y.zero_point)
                q = requantize(acc, m0, sh, zy, L.y.qmin, L.y.qmax)
                q = int_relu(q, zy) if L.relu else q
                k += 1
            elif kind == "pool":
                q = int_maxpool2d(q, step[1])
            elif kind == "flatten":
                q = q.flatten(1)
        return q

    def quantize_input(self, x: torch.Tensor) -> torch.Tensor:
        return self.input.quantize(x)

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        """Float input → integer network → dequantized outputs (float32)."""
        return self.layers[-1].y.dequantize(self.forward_int(self.quantize_input(x)))

    @torch.no_grad()
    def fake_quant_forward(self, x: torch.Tensor) -> torch.Tensor:
        """The same quantized model simulated in float64: every tensor is quantized then dequantized
        (weights, bias at scale s_x·s_w, activations), the ops run on the dequantized reals."""
        def fq(qp: QParams, v: torch.Tensor) -> torch.Tensor:          # float64 fake-quant, per tensor
            s, z = float(qp.scale), int(qp.zero_point)
            return (torch.clamp(torch.round(v / s) + z, qp.qmin, qp.qmax) - z) * s

        v, k = fq(self.input, x.double()), 0
        for step in self.plan:
            kind = step[0]
            if kind == "pad":
                v = F.pad(v, (step[1],) * 4)
            elif kind in ("conv", "linear"):
                L = self.layers[k]
                w_hat = L.w.dequantize(L.wq).double()
                s_w = L.w.scale.reshape(-1).double()
                b_hat = L.bias_q.double() * float(L.x.scale) * s_w
                v = F.conv2d(v, w_hat, b_hat) if kind == "conv" else F.linear(v, w_hat, b_hat)
                v = F.relu(v) if L.relu else v
                v = fq(L.y, v)
                k += 1
            elif kind == "pool":
                v = F.max_pool2d(v, step[1])
            elif kind == "flatten":
                v = v.flatten(1)
        return v.float()

    def weight_bytes(self, scale_bytes: int = 4) -> dict:
        """Theoretical storage: int8 weights, int32 biases, one float32 scale per tensor/channel (+ the
        fixed-point multipliers, 4 + 1 bytes per output channel) and per-tensor activation params."""
        w = sum(L.wq.numel() for L in self.layers)
        b = 4 * sum(L.bias_q.numel() for L in self.layers)
        scales = scale_bytes * sum(L.w.scale.numel() for L in self.layers)
        requant = 5 * sum(L.m0.numel() for L in self.layers)
        act = (scale_bytes + 1) * (1 + len(self.layers))
        return {"weights": w, "bias": b, "scales": scales, "requant": requant, "activations": act,
                "total": w + b + scales + requant + act}
