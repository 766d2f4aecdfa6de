"""A Llama forward pass in one readable file, nanoGPT style: the model behind SmolLM2 (and Llama 2/3, Mistral, Qwen).

Four changes to GPT-2's block (helpers/models/gpt.py), each one line of math:
- RMSNorm instead of LayerNorm: scale by 1 / rms(x), no mean subtraction, no bias.
- RoPE instead of learned positions: rotate each (q, k) pair of dimensions by an angle proportional to the position,
  so q·k depends only on the distance between the two tokens. HF's `rotate_half` layout: dimension i pairs with
  i + D/2 (not 2i with 2i+1 as in the paper), which is how HF checkpoints store the q/k projections.
- Grouped-query attention: n_heads query heads share n_kv_heads key/value heads (SmolLM2: 9 q, 3 kv), so the KV cache
  is n_heads / n_kv_heads times smaller. Each kv head serves a group of consecutive q heads (`repeat_interleave`).
- SwiGLU MLP: down(silu(gate(x)) * up(x)).

The forward pass takes the serving protocol's flat layout: `forward(tokens (N,), positions (N,), attend)`, where the N
tokens may belong to several sequences and `attend(layer, q, k, v)` (a backend: contiguous cache, paged cache, or the
plain causal reference) owns the K/V. The model never stores K/V, so the same weights serve the reference, the
contiguous-cache generator (helpers/serving/kv_cache.py) and the paged engine. `logits(idx)` is the whole-sequence
reference. Parameter names follow Hugging Face's LlamaForCausalLM, so `from_hf` is a rename.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn as nn
from torch.nn import functional as F


@dataclass
class LlamaConfig:
    vocab_size: int = 49152
    dim: int = 576  # C, the residual stream width
    n_layers: int = 30
    n_heads: int = 9  # query heads
    n_kv_heads: int = 3  # key/value heads (GQA); n_heads must be a multiple
    hidden_dim: int = 1536  # SwiGLU inner width
    norm_eps: float = 1e-5
    rope_theta: float = 100000.0
    max_seq_len: int = 8192  # longest position the RoPE tables cover
    tie_embeddings: bool = True  # lm_head shares the token embedding (SmolLM2 does)

    def __post_init__(self):
        for name in ("vocab_size", "dim", "n_layers", "n_heads", "n_kv_heads", "hidden_dim", "max_seq_len"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"LlamaConfig.{name} must be >= 1, got {getattr(self, name)!r}")
        if self.dim % self.n_heads:
            raise ValueError(f"dim={self.dim} is not divisible by n_heads={self.n_heads}")
        if self.n_heads % self.n_kv_heads:
            raise ValueError(f"n_heads={self.n_heads} is not a multiple of n_kv_heads={self.n_kv_heads}")
        if self.head_dim % 2:
            raise ValueError(f"RoPE needs an even head_dim, got {self.head_dim}")

    @property
    def head_dim(self) -> int:
        return self.dim // self.n_heads

    @classmethod
    def from_hf(cls, c) -> "LlamaConfig":
        """The config of a transformers `LlamaConfig` (rope_theta from `rope_theta` or `rope_parameters`)."""
        theta = getattr(c, "rope_theta", None)
        if theta is None:  # transformers >= 5 keeps it in rope_parameters
            theta = (getattr(c, "rope_parameters", None) or {}).get("rope_theta", 10000.0)
        rope_type = (getattr(c, "rope_parameters", None) or getattr(c, "rope_scaling", None) or {}).get("rope_type")
        if rope_type not in (None, "default"):
            raise ValueError(f"only plain RoPE is implemented, this config uses rope_type={rope_type!r}")
        head_dim = getattr(c, "head_dim", None) or c.hidden_size // c.num_attention_heads
        if head_dim * c.num_attention_heads != c.hidden_size:
            raise ValueError(f"head_dim {head_dim} x {c.num_attention_heads} heads != hidden_size {c.hidden_size}")
        return cls(vocab_size=c.vocab_size, dim=c.hidden_size, n_layers=c.num_hidden_layers,
                   n_heads=c.num_attention_heads, n_kv_heads=c.num_key_value_heads, hidden_dim=c.intermediate_size,
                   norm_eps=c.rms_norm_eps, rope_theta=float(theta), max_seq_len=c.max_position_embeddings,
                   tie_embeddings=bool(getattr(c, "tie_word_embeddings", False)))


class RMSNorm(nn.Module):
    """x / sqrt(mean(x²) + eps) * weight (Zhang & Sennrich 2019): LayerNorm without the mean and the bias."""

    def __init__(self, dim: int, eps: float):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        rms = torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps)  # (..., 1)
        return self.weight * (x * rms)


def rope_tables(head_dim: int, max_seq_len: int, theta: float) -> tuple[torch.Tensor, torch.Tensor]:
    """cos, sin (max_seq_len, head_dim): angle pos * theta^(-2i/D), the D/2 frequencies written twice (rotate_half)."""
    inv_freq = 1.0 / (theta ** (torch.arange(0, head_dim, 2, dtype=torch.int64).float() / head_dim))  # (D/2,)
    angles = torch.outer(torch.arange(max_seq_len).float(), inv_freq)  # (L, D/2)
    angles = torch.cat([angles, angles], dim=-1)  # (L, D): dim i and i + D/2 share a frequency
    return angles.cos(), angles.sin()


def rotate_half(x: torch.Tensor) -> torch.Tensor:
    """(x1, x2) -> (-x2, x1) on the two halves of the last dimension: a 90° turn of every (i, i + D/2) pair."""
    x1, x2 = x.chunk(2, dim=-1)
    return torch.cat([-x2, x1], dim=-1)


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate x (N, heads, D) by the angles of its tokens' positions; cos, sin are (N, D)."""
    return x * cos[:, None, :] + rotate_half(x) * sin[:, None, :]


def causal_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, q_positions: torch.Tensor) -> torch.Tensor:
    """softmax(q kᵀ / √D) v for one sequence, with GQA; the query at position p sees keys 0..p.

    q (T, H, D) are the new tokens at positions q_positions (T,); k, v (S, Hkv, D) hold positions 0..S-1 of the same
    sequence (S >= max position + 1). Returns (T, H, D). Every attention backend ends here.
    """
    T, H, D = q.shape
    S, Hkv, _ = k.shape
    k = k.repeat_interleave(H // Hkv, dim=1)  # (S, H, D): kv head j serves q heads j*g .. j*g + g - 1
    v = v.repeat_interleave(H // Hkv, dim=1)  # (S, H, D)
    att = (q.transpose(0, 1) @ k.permute(1, 2, 0)) * (1.0 / math.sqrt(D))  # (H, T, S)
    visible = torch.arange(S, device=q.device)[None, :] <= q_positions[:, None]  # (T, S)
    att = att.masked_fill(~visible, float("-inf")).softmax(dim=-1)  # each row sums to 1 over the past
    return (att @ v.transpose(0, 1)).transpose(0, 1)  # (T, H, D)


def reference_attend(layer: int, q, k, v):
    """The backend for one whole sequence at positions 0..N-1 and no cache: plain causal attention."""
    return causal_attention(q, k, v, torch.arange(q.shape[0], device=q.device))


class Attention(nn.Module):
    def __init__(self, cfg: LlamaConfig):
        super().__init__()
        self.n_heads, self.n_kv_heads, self.head_dim = cfg.n_heads, cfg.n_kv_heads, cfg.head_dim
        self.q_proj = nn.Linear(cfg.dim, cfg.n_heads * cfg.head_dim, bias=False)
        self.k_proj = nn.Linear(cfg.dim, cfg.n_kv_heads * cfg.head_dim, bias=False)
        self.v_proj = nn.Linear(cfg.dim, cfg.n_kv_heads * cfg.head_dim, bias=False)
        self.o_proj = nn.Linear(cfg.n_heads * cfg.head_dim, cfg.dim, bias=False)

    def forward(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, attend) -> torch.Tensor:
        N = x.shape[0]
        q = self.q_proj(x).view(N, self.n_heads, self.head_dim)  # (N, H, D)
        k = self.k_proj(x).view(N, self.n_kv_heads, self.head_dim)  # (N, Hkv, D)
        v = self.v_proj(x).view(N, self.n_kv_heads, self.head_dim)  # (N, Hkv, D)
        q, k = apply_rope(q, cos, sin), apply_rope(k, cos, sin)  # positions enter here, and only here
        y = attend(q, k, v)  # (N, H, D): the backend stores k, v and attends over the sequence's past
        return self.o_proj(y.reshape(N, self.n_heads * self.head_dim))  # (N, C)


class MLP(nn.Module):
    """SwiGLU (Shazeer 2020): down(silu(gate(x)) * up(x))."""

    def __init__(self, cfg: LlamaConfig):
        super().__init__()
        self.gate_proj = nn.Linear(cfg.dim, cfg.hidden_dim, bias=False)
        self.up_proj = nn.Linear(cfg.dim, cfg.hidden_dim, bias=False)
        self.down_proj = nn.Linear(cfg.hidden_dim, cfg.dim, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down_proj(F.silu(self.gate_proj(x)) * self.up_proj(x))  # (N, C)


class Block(nn.Module):
    """Pre-norm: x + attn(norm(x)), then x + mlp(norm(x))."""

    def __init__(self, cfg: LlamaConfig):
        super().__init__()
        self.input_layernorm = RMSNorm(cfg.dim, cfg.norm_eps)
        self.self_attn = Attention(cfg)
        self.post_attention_layernorm = RMSNorm(cfg.dim, cfg.norm_eps)
        self.mlp = MLP(cfg)

    def forward(self, x, cos, sin, attend):
        x = x + self.self_attn(self.input_layernorm(x), cos, sin, attend)  # (N, C)
        return x + self.mlp(self.post_attention_layernorm(x))


class Llama(nn.Module):
    """Token embedding -> n_layers blocks -> RMSNorm -> logits, over a flat batch of N tokens."""

    def __init__(self, cfg: LlamaConfig):
        super().__init__()
        self.cfg = cfg
        self.embed_tokens = nn.Embedding(cfg.vocab_size, cfg.dim)
        self.layers = nn.ModuleList([Block(cfg) for _ in range(cfg.n_layers)])
        self.norm = RMSNorm(cfg.dim, cfg.norm_eps)
        self.lm_head = nn.Linear(cfg.dim, cfg.vocab_size, bias=False)
        if cfg.tie_embeddings:
            self.lm_head.weight = self.embed_tokens.weight
        cos, sin = rope_tables(cfg.head_dim, cfg.max_seq_len, cfg.rope_theta)
        self.register_buffer("rope_cos", cos, persistent=False)  # (max_seq_len, D)
        self.register_buffer("rope_sin", sin, persistent=False)

    def forward(self, tokens: torch.Tensor, positions: torch.Tensor, attend, rows: torch.Tensor | None = None):
        """logits (N, V) of N tokens (N,) at positions (N,); attend(layer, q, k, v) -> (N, H, D) owns the K/V.

        rows (R,): only those rows' logits, (R, V) — an engine samples from each sequence's last token only, and the
        lm_head (V = 49,152 on SmolLM2) is the largest matmul of a long prefill."""
        if tokens.dim() != 1 or positions.shape != tokens.shape:
            raise ValueError(f"tokens and positions must both be (N,), got {tuple(tokens.shape)} and "
                             f"{tuple(positions.shape)}")
        if len(positions) and (int(positions.min()) < 0 or int(positions.max()) >= self.cfg.max_seq_len):
            raise ValueError(f"positions must lie in [0, {self.cfg.max_seq_len}), got {positions.min().item()}.."
                             f"{positions.max().item()}")
        x = self.embed_tokens(tokens)  # (N, C)
        cos, sin = self.rope_cos[positions], self.rope_sin[positions]  # (N, D) each
        for i, layer in enumerate(self.layers):
            x = layer(x, cos, sin, lambda q, k, v, i=i: attend(i, q, k, v))
        if rows is not None:
            x = x[rows]  # (R, C)
        return self.lm_head(self.norm(x))  # (N or R, V)

    @torch.no_grad()
    def logits(self, idx: torch.Tensor) -> torch.Tensor:
        """(B, T, V) for whole sequences (B, T), no cache: the reference every cached path must reproduce."""
        if idx.dim() != 2:
            raise ValueError(f"idx must be (B, T) token ids, got shape {tuple(idx.shape)}")
        positions = torch.arange(idx.shape[1], device=idx.device)
        return torch.stack([self(row, positions, reference_attend) for row in idx])

    @classmethod
    def from_hf(cls, hf_model) -> "Llama":
        """A Llama holding a copy of the weights of a transformers `LlamaForCausalLM`."""
        cfg = LlamaConfig.from_hf(hf_model.config)
        with torch.device("meta"):  # skip the random init: every weight is about to be replaced
            model = cls(cfg)
        sd = {k.removeprefix("model."): v.detach().clone() for k, v in hf_model.state_dict().items()
              if not k.endswith("rotary_emb.inv_freq")}
        if cfg.tie_embeddings:
            sd["lm_head.weight"] = sd["embed_tokens.weight"]
        model.load_state_dict(sd, assign=True, strict=True)
        if cfg.tie_embeddings:
            model.lm_head.weight = model.embed_tokens.weight  # assign=True gave them separate Parameters
        cos, sin = rope_tables(cfg.head_dim, cfg.max_seq_len, cfg.rope_theta)
        model.rope_cos, model.rope_sin = cos, sin  # buffers were on the meta device
        return model.to(next(hf_model.parameters()).dtype).eval()
