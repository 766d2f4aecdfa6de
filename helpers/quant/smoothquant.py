"""SmoothQuant: W8A8 for LLMs by migrating activation outliers into the weights (Xiao et al., 2023,
"SmoothQuant: Accurate and Efficient Post-Training Quantization for Large Language Models", §3-4;
reference code mit-han-lab/smoothquant, smoothquant/smooth.py and fake_quant.py).

LLM activations have a few input *channels* whose values are 10-100× the rest, on every token
(`activation_picture`). A per-tensor or per-token int8 scale must cover them, so every other channel lands
on a handful of codes. Weights are smooth and easy. Per input channel j, divide X by s_j and multiply W's
column j by s_j: Y = (X diag(s)⁻¹)(diag(s) W) — the float output is unchanged, and with

    s_j = max|X_j|^α / max|W_j|^(1-α)                        (α = 0.5 balances the two; α → 1 all into W)

the channel maxima of X̂ = X/s and Ŵ = diag(s)W become max|X_j|^(1-α) max|W_j|^(1-α) and
max|X_j|^α max|W_j|^α — equal at α = 0.5. diag(s)⁻¹ is folded into the RMSNorm weight before q/k/v and
before gate/up (the inputs of o_proj and down_proj are not smoothed, as in the reference for Llama).

Quantization (`W8A8Linear`): int8 symmetric weights per output channel or per tensor, int8 symmetric
activations per token or per tensor, both dynamic (scale from the tensor itself). The paper's settings
all use per-tensor weights: O1 = per-token dynamic activations, O2 = per-tensor dynamic, O3 = per-tensor
static. The integer path computes int8 × int8 → int32 (`torch._int_mm`) and dequantizes with s_x s_w.
Scales follow `helpers.quant.affine`: max|x| / 127.5 (torch's observers), codes in [-128, 127].
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .affine import QSpec
from .integer_ops import int_linear

# --- statistics -----------------------------------------------------------------------------------------


@torch.no_grad()
def activation_stats(model: nn.Module, windows: torch.Tensor, stat: str = "absmax") -> dict[str, torch.Tensor]:
    """{linear name: per-input-channel statistic of its input} over calibration token windows (n, seq), for
    every nn.Linear in the decoder layers: "absmax" = max |x_j| (SmoothQuant), "mean" = mean |x_j| (AWQ)."""
    if stat not in ("absmax", "mean"):
        raise ValueError(f"stat must be 'absmax' or 'mean', got {stat!r}")
    if not isinstance(windows, torch.Tensor) or windows.ndim != 2 or windows.is_floating_point():
        raise ValueError("windows must be an integer tensor of token ids (n_windows, seq)")
    acc: dict[str, torch.Tensor] = {}
    counts: dict[str, int] = {}

    def hook(name):
        def record(m, inp, out):
            a = inp[0].detach().abs().reshape(-1, inp[0].shape[-1]).float()     # (tokens, in)
            if stat == "absmax":
                v = a.amax(0)
                acc[name] = v if name not in acc else torch.maximum(acc[name], v)
            else:
                acc[name] = a.sum(0) + acc.get(name, 0)
                counts[name] = counts.get(name, 0) + a.shape[0]
        return record

    hooks = [m.register_forward_hook(hook(n)) for n, m in model.named_modules()
             if isinstance(m, nn.Linear) and ".layers." in f".{n}"]
    try:
        for w in windows:
            model.model(w.unsqueeze(0))                          # the decoder only: lm_head is not needed
    finally:
        for h in hooks:
            h.remove()
    return acc if stat == "absmax" else {n: v / counts[n] for n, v in acc.items()}


@torch.no_grad()
def activation_picture(model: nn.Module, tokens: torch.Tensor, layer: int = 0,
                       name: str = "self_attn.q_proj") -> torch.Tensor:
    """|x| (seq, channels) of the input of one linear (default: q_proj, i.e. after input_layernorm) for one
    token window (seq,) — the paper's Fig. 4 picture; `.amax(0)` gives the per-channel max to plot."""
    if not isinstance(tokens, torch.Tensor) or tokens.ndim != 1:
        raise ValueError("tokens must be a 1-d tensor of token ids (seq,)")
    mod = dict(model.model.layers[layer].named_modules()).get(name)
    if not isinstance(mod, nn.Linear):
        raise ValueError(f"layer {layer} has no linear named {name!r}")
    seen = {}
    h = mod.register_forward_hook(lambda m, inp, out: seen.__setitem__("x", inp[0].detach()))
    try:
        model.model(tokens.unsqueeze(0))
    finally:
        h.remove()
    return seen["x"][0].abs()


# --- smoothing (§4) -------------------------------------------------------------------------------------


def smoothing_scales(act_absmax: torch.Tensor, weights: list[torch.Tensor], alpha: float) -> torch.Tensor:
    """s_j = max|X_j|^α / max|W_j|^(1-α), with max|W_j| over every output row of every weight (out, in)
    that reads X (q, k and v share one s). Clamped at 1e-5 as the reference."""
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must be in [0, 1], got {alpha}")
    if any(w.ndim != 2 or w.shape[1] != act_absmax.numel() for w in weights):
        raise ValueError("each weight must be (out, in) with in = len(act_absmax)")
    w_absmax = torch.stack([w.detach().abs().amax(0) for w in weights]).amax(0).clamp(min=1e-5)   # (in,)
    return (act_absmax.float().pow(alpha) / w_absmax.float().pow(1 - alpha)).clamp(min=1e-5)


@torch.no_grad()
def smooth(norm: nn.Module, linears: list[nn.Linear], act_absmax: torch.Tensor, alpha: float) -> torch.Tensor:
    """Fold diag(s)⁻¹ into the norm's weight and diag(s) into the linears' input columns, in place; returns s."""
    s = smoothing_scales(act_absmax, [fc.weight for fc in linears], alpha)
    norm.weight.div_(s)
    for fc in linears:
        fc.weight.mul_(s.view(1, -1))
    return s


@torch.no_grad()
def smooth_model(model: nn.Module, act_stats: dict[str, torch.Tensor], alpha: float = 0.5) -> nn.Module:
    """Smooth every Llama decoder layer in place: input_layernorm → q/k/v, post_attention_layernorm → gate/up.
    act_stats: `activation_stats(model, windows)` (absmax, keyed "model.layers.{i}.self_attn.q_proj", …)."""
    for i, layer in enumerate(model.model.layers):
        attn, mlp, pre = layer.self_attn, layer.mlp, f"model.layers.{i}."
        for key in ("self_attn.q_proj", "mlp.gate_proj"):
            if pre + key not in act_stats:
                raise KeyError(f"act_stats has no {pre + key}: collect it with activation_stats(model, windows)")
        smooth(layer.input_layernorm, [attn.q_proj, attn.k_proj, attn.v_proj], act_stats[pre + "self_attn.q_proj"],
               alpha)
        smooth(layer.post_attention_layernorm, [mlp.gate_proj, mlp.up_proj], act_stats[pre + "mlp.gate_proj"], alpha)
    return model


# --- W8A8 -----------------------------------------------------------------------------------------------

WEIGHT_GRANULARITIES = ("channel", "tensor")
ACT_GRANULARITIES = ("token", "tensor")


class W8A8Linear(nn.Module):
    """A linear layer with int8 weights (stored as codes + scales) and int8 dynamic activations.

    forward_fake: fake quantization (x̂ = s_x q_x, Ŵ = s_w q_w, then a float matmul).
    forward_int: the integer path, y = s_x s_w (q_x @ q_wᵀ) with the product in int32 — the same numbers.
    forward uses the integer path when `integer` is True (default: fake quantization).
    """

    def __init__(self, linear: nn.Linear, weight: str = "channel", act: str = "token", integer: bool = False):
        super().__init__()
        self.integer = integer
        if weight not in WEIGHT_GRANULARITIES or act not in ACT_GRANULARITIES:
            raise ValueError(f"weight granularity must be in {WEIGHT_GRANULARITIES}, act in {ACT_GRANULARITIES}")
        self.in_features, self.out_features = linear.in_features, linear.out_features
        self.act = act
        w = linear.weight.detach().float()                                    # (out, in)
        spec = QSpec(bits=8, symmetric=True, granularity="channel" if weight == "channel" else "tensor", axis=0)
        qp = spec.calibrate(w)
        self.register_buffer("w_codes", qp.quantize(w).to(torch.int8))         # (out, in)
        self.register_buffer("w_scale", qp.scale.reshape(-1, 1).expand(self.out_features, 1).contiguous())  # (out, 1)
        self.register_buffer("bias", None if linear.bias is None else linear.bias.detach().float().clone())

    def _quantize_act(self, x: torch.Tensor):
        """x (tokens, in) → int8 codes (tokens, in) and scales (tokens, 1) or (1, 1)."""
        spec = QSpec(bits=8, symmetric=True, granularity="channel" if self.act == "token" else "tensor", axis=0)
        qp = spec.calibrate(x)
        return qp.quantize(x).to(torch.int8), qp.scale.reshape(-1, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_int(x) if self.integer else self.forward_fake(x)

    def forward_fake(self, x: torch.Tensor) -> torch.Tensor:
        shape = x.shape
        x = x.reshape(-1, shape[-1]).float()                                  # (tokens, in)
        q, s_x = self._quantize_act(x)
        x_hat = q.float() * s_x
        w_hat = self.w_codes.float() * self.w_scale
        return F.linear(x_hat, w_hat, self.bias).reshape(*shape[:-1], self.out_features)

    def forward_int(self, x: torch.Tensor) -> torch.Tensor:
        shape = x.shape
        q, s_x = self._quantize_act(x.reshape(-1, shape[-1]).float())
        acc = int8_matmul(q, self.w_codes)                                    # (tokens, out) int32
        y = acc.float() * s_x * self.w_scale.view(1, -1)
        if self.bias is not None:
            y = y + self.bias
        return y.reshape(*shape[:-1], self.out_features)


def int8_matmul(xq: torch.Tensor, wq: torch.Tensor) -> torch.Tensor:
    """int8 (tokens, in) × int8 (out, in)ᵀ → int32 (tokens, out), exact: torch._int_mm (a real int8 GEMM with
    int32 accumulation), or an int32 matmul (`integer_ops.int_linear`) where _int_mm is unavailable."""
    if xq.dtype != torch.int8 or wq.dtype != torch.int8:
        raise TypeError(f"int8_matmul needs int8 codes, got {xq.dtype} and {wq.dtype}")
    try:
        return torch._int_mm(xq.contiguous(), wq.t().contiguous())
    except (RuntimeError, AttributeError):
        return int_linear(xq, 0, wq)


@torch.no_grad()
def quantize_model_w8a8(model: nn.Module, weight: str = "channel", act: str = "token",
                        integer: bool = False) -> nn.Module:
    """Replace every nn.Linear of the decoder layers by a `W8A8Linear`, in place (lm_head stays float).
    integer: run them on the int8 × int8 → int32 path instead of fake quantization."""
    for layer in model.model.layers:
        for parent in list(layer.modules()):
            for name, child in list(parent.named_children()):
                if isinstance(child, nn.Linear):
                    setattr(parent, name, W8A8Linear(child, weight, act, integer))
    return model
