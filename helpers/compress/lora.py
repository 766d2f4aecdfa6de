"""LoRA from scratch (Hu et al. 2021, "LoRA: Low-Rank Adaptation of Large Language Models").

Fine-tuning changes a pretrained weight W0 (out, in) by some ΔW. LoRA's hypothesis: ΔW has low intrinsic rank, so
it is learned as a product of two thin matrices while W0 stays frozen:

    W = W0 + (alpha / r) · B A,      A: (r, in) random,  B: (out, r) zeros,  r ≪ min(in, out)
    y = W0 x + (alpha / r) · B (A x)

B = 0 makes the adapted model start exactly at the pretrained one. Trainable parameters per layer: r · (in + out)
instead of in · out, and so is the optimizer state (Adam keeps two more numbers per trainable parameter).
After training, B A is folded into W0 (`merge`): one plain Linear again, so inference costs nothing extra.

This is what peft's `LoraModel` does (module 1.2's `helpers.quant.qlora.add_lora` uses peft on a 4-bit model); the
tests check this file against peft on the same weights.
"""
from __future__ import annotations

import math

import torch
from torch import nn


class LoRALinear(nn.Module):
    """A frozen `base` Linear plus a trainable rank-`r` update (alpha / r) · B A."""

    def __init__(self, base: nn.Linear, r: int, alpha: float, dropout: float = 0.0):
        super().__init__()
        if not isinstance(base, nn.Linear):
            raise TypeError(f"LoRALinear wraps an nn.Linear; got {type(base).__name__}")
        if not (isinstance(r, int) and r >= 1):
            raise ValueError(f"LoRA rank r must be an integer ≥ 1; got {r!r}")
        self.base, self.r, self.alpha = base, r, alpha
        self.scaling = alpha / r
        for p in base.parameters():
            p.requires_grad_(False)                                        # W0 (and bias) frozen
        w = base.weight
        self.A = nn.Parameter(torch.empty(r, base.in_features, dtype=w.dtype, device=w.device))   # (r, in)
        self.B = nn.Parameter(torch.zeros(base.out_features, r, dtype=w.dtype, device=w.device))  # (out, r)
        nn.init.kaiming_uniform_(self.A, a=math.sqrt(5))                   # nn.Linear's (and peft's) default init
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:                   # (..., in) -> (..., out)
        return self.base(x) + (self.dropout(x) @ self.A.T @ self.B.T) * self.scaling

    @torch.no_grad()
    def merge(self) -> nn.Linear:
        """A plain nn.Linear with W0 + (alpha / r) · B A: same outputs (without dropout), no extra inference cost."""
        base = self.base
        merged = nn.Linear(base.in_features, base.out_features, bias=base.bias is not None,
                           dtype=base.weight.dtype, device=base.weight.device)
        merged.weight.copy_(base.weight + (self.B @ self.A) * self.scaling)  # (out, in)
        if base.bias is not None:
            merged.bias.copy_(base.bias)
        return merged

    def extra_repr(self) -> str:
        return f"r={self.r}, alpha={self.alpha}, scaling={self.scaling:g}"


def lora_parameter_count(d_in: int, d_out: int, r: int) -> int:
    """Trainable parameters of a rank-r adapter on a (d_out, d_in) weight: A (r, d_in) + B (d_out, r)."""
    for name, v in (("d_in", d_in), ("d_out", d_out), ("r", r)):
        if not (isinstance(v, int) and v >= 1):
            raise ValueError(f"{name} must be an integer ≥ 1; got {v!r}")
    return r * (d_in + d_out)


def apply_lora(model: nn.Module, targets, r: int, alpha: float, dropout: float = 0.0) -> nn.Module:
    """Freeze `model` and wrap (in place) every nn.Linear whose name ends with one of `targets` in a LoRALinear.

    Names as in `model.named_modules()` ("layers.0.self_attn.q_proj" matches target "q_proj"). Returns `model`."""
    targets = (targets,) if isinstance(targets, str) else tuple(targets)
    chosen = [(name, m) for name, m in model.named_modules()
              if isinstance(m, nn.Linear) and any(name == t or name.endswith("." + t) for t in targets)]
    if not chosen:
        linears = [n for n, m in model.named_modules() if isinstance(m, nn.Linear)][:5]
        raise ValueError(f"no nn.Linear named by targets {targets}; the model's linears include {linears}")
    for p in model.parameters():
        p.requires_grad_(False)
    for name, linear in chosen:
        parent_name, _, child = name.rpartition(".")
        parent = model.get_submodule(parent_name) if parent_name else model
        setattr(parent, child, LoRALinear(linear, r, alpha, dropout))
    return model
