"""GPT in one readable file, nanoGPT style: the model of Lecture 7 and, with `GPTConfig.gpt2()`, GPT-2 (124M).

The layout and parameter names follow GPT-2 (and nanoGPT), so a Hugging Face `GPT2LMHeadModel` state dict
converts both ways with a few transposes (`hf_to_ours` / `ours_to_hf`): OpenAI stored the linear layers as
`Conv1D`, whose weight is (in, out) where `nn.Linear` keeps (out, in).
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import torch
import torch.nn as nn
from torch.nn import functional as F


@dataclass
class GPTConfig:
    block_size: int = 1024  # longest context T the position table covers
    vocab_size: int = 50257  # GPT-2: 50,000 merges + 256 bytes + <|endoftext|>
    n_layer: int = 12
    n_head: int = 12
    n_embd: int = 768  # C; each head has C // n_head dims
    dropout: float = 0.0
    bias: bool = True  # biases in Linear and LayerNorm, as GPT-2 (nanoGPT's small models drop them)

    def __post_init__(self):
        for name in ("block_size", "vocab_size", "n_layer", "n_head", "n_embd"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"GPTConfig.{name} must be >= 1, got {getattr(self, name)!r}")
        if self.n_embd % self.n_head:
            raise ValueError(f"n_embd={self.n_embd} is not divisible by n_head={self.n_head}")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout!r}")

    @classmethod
    def gpt2(cls, name: str = "gpt2") -> "GPTConfig":
        """The published GPT-2 sizes: gpt2 (124M), gpt2-medium (350M), gpt2-large (774M), gpt2-xl (1558M)."""
        sizes = {"gpt2": (12, 12, 768), "gpt2-medium": (24, 16, 1024),
                 "gpt2-large": (36, 20, 1280), "gpt2-xl": (48, 25, 1600)}
        if name not in sizes:
            raise ValueError(f"unknown GPT-2 size {name!r}; known: {', '.join(sizes)}")
        n_layer, n_head, n_embd = sizes[name]
        return cls(block_size=1024, vocab_size=50257, n_layer=n_layer, n_head=n_head, n_embd=n_embd)


class CausalSelfAttention(nn.Module):
    """Multi-head self-attention where position t only sees positions <= t."""

    def __init__(self, config: GPTConfig):
        super().__init__()
        self.n_head, self.n_embd, self.dropout = config.n_head, config.n_embd, config.dropout
        self.c_attn = nn.Linear(config.n_embd, 3 * config.n_embd, bias=config.bias)  # q, k, v in one matmul
        self.c_proj = nn.Linear(config.n_embd, config.n_embd, bias=config.bias)
        self.attn_dropout = nn.Dropout(config.dropout)
        self.resid_dropout = nn.Dropout(config.dropout)

    def forward(self, x: torch.Tensor, return_attn: bool = False):
        B, T, C = x.shape
        hs = C // self.n_head
        q, k, v = self.c_attn(x).split(self.n_embd, dim=2)  # 3 x (B, T, C)
        q = q.view(B, T, self.n_head, hs).transpose(1, 2)  # (B, nh, T, hs)
        k = k.view(B, T, self.n_head, hs).transpose(1, 2)  # (B, nh, T, hs)
        v = v.view(B, T, self.n_head, hs).transpose(1, 2)  # (B, nh, T, hs)
        att = None
        if return_attn:  # the spelled-out version, keeping the attention weights
            att = (q @ k.transpose(-2, -1)) / math.sqrt(hs)  # (B, nh, T, T)
            causal = torch.ones(T, T, dtype=torch.bool, device=x.device).tril()  # (T, T)
            att = att.masked_fill(~causal, float("-inf"))
            att = F.softmax(att, dim=-1)  # each row sums to 1 over the past
            y = self.attn_dropout(att) @ v  # (B, nh, T, hs)
        else:  # the same computation, fused (flash attention on a GPU)
            y = F.scaled_dot_product_attention(q, k, v, is_causal=True,
                                               dropout_p=self.dropout if self.training else 0.0)
        y = y.transpose(1, 2).contiguous().view(B, T, C)  # (B, T, C): heads side by side
        return self.resid_dropout(self.c_proj(y)), att


class MLP(nn.Module):
    """Position-wise feed-forward: C -> 4C -> GELU (tanh approximation, as GPT-2) -> C."""

    def __init__(self, config: GPTConfig):
        super().__init__()
        self.c_fc = nn.Linear(config.n_embd, 4 * config.n_embd, bias=config.bias)
        self.gelu = nn.GELU(approximate="tanh")
        self.c_proj = nn.Linear(4 * config.n_embd, config.n_embd, bias=config.bias)
        self.dropout = nn.Dropout(config.dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.dropout(self.c_proj(self.gelu(self.c_fc(x))))  # (B, T, C)


class Block(nn.Module):
    """Pre-norm transformer block: x + attn(ln(x)), then x + mlp(ln(x))."""

    def __init__(self, config: GPTConfig):
        super().__init__()
        self.ln_1 = nn.LayerNorm(config.n_embd, bias=config.bias)
        self.attn = CausalSelfAttention(config)
        self.ln_2 = nn.LayerNorm(config.n_embd, bias=config.bias)
        self.mlp = MLP(config)

    def forward(self, x: torch.Tensor, return_attn: bool = False):
        a, att = self.attn(self.ln_1(x), return_attn)
        x = x + a  # (B, T, C) residual stream
        x = x + self.mlp(self.ln_2(x))
        return x, att


def filter_logits(logits: torch.Tensor, top_k: int | None = None, top_p: float | None = None) -> torch.Tensor:
    """Set to -inf every logit outside the top-k and outside the smallest set with probability >= top_p."""
    if top_k is not None:
        if int(top_k) < 1:
            raise ValueError(f"top_k must be >= 1, got {top_k!r}")
        kth = torch.topk(logits, min(int(top_k), logits.size(-1)), dim=-1).values[..., -1:]  # (B, 1)
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if top_p is not None:
        if not 0.0 < top_p <= 1.0:
            raise ValueError(f"top_p must be in (0, 1], got {top_p!r}")
        sorted_logits, order = torch.sort(logits, dim=-1, descending=True)  # (B, V)
        probs = F.softmax(sorted_logits, dim=-1)
        mass_before = probs.cumsum(dim=-1) - probs  # probability of the tokens ranked above
        drop_sorted = mass_before >= top_p  # the first token always stays (mass_before = 0)
        drop = drop_sorted.scatter(-1, order, drop_sorted)  # back to vocabulary order
        logits = logits.masked_fill(drop, float("-inf"))
    return logits


class GPT(nn.Module):
    """Token + position embeddings -> n_layer blocks -> LayerNorm -> logits (weights tied to the embedding)."""

    def __init__(self, config: GPTConfig):
        super().__init__()
        self.config = config
        self.transformer = nn.ModuleDict(dict(
            wte=nn.Embedding(config.vocab_size, config.n_embd),  # token embedding
            wpe=nn.Embedding(config.block_size, config.n_embd),  # learned position embedding
            drop=nn.Dropout(config.dropout),
            h=nn.ModuleList([Block(config) for _ in range(config.n_layer)]),
            ln_f=nn.LayerNorm(config.n_embd, bias=config.bias),
        ))
        self.lm_head = nn.Linear(config.n_embd, config.vocab_size, bias=False)
        self.transformer.wte.weight = self.lm_head.weight  # weight tying (Press & Wolf 2017), as GPT-2
        self.apply(self._init_weights)
        for name, p in self.named_parameters():  # GPT-2: scale residual projections by 1/sqrt(2 * n_layer)
            if name.endswith("c_proj.weight"):
                torch.nn.init.normal_(p, mean=0.0, std=0.02 / math.sqrt(2 * config.n_layer))

    def _init_weights(self, module: nn.Module) -> None:
        if isinstance(module, nn.Linear):
            torch.nn.init.normal_(module.weight, mean=0.0, std=0.02)
            if module.bias is not None:
                torch.nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding):
            torch.nn.init.normal_(module.weight, mean=0.0, std=0.02)

    def num_params(self, non_embedding: bool = False) -> int:
        """Parameters counted once (the tied matrix once); `non_embedding` leaves out the position table, as nanoGPT."""
        n = sum(p.numel() for p in self.parameters())
        return n - self.transformer.wpe.weight.numel() if non_embedding else n

    def forward(self, idx: torch.Tensor, targets: torch.Tensor | None = None, return_attn: bool = False):
        """(logits (B, T, V), loss or None) and, with `return_attn`, the list of (B, nh, T, T) attention maps."""
        if idx.dim() != 2:
            raise ValueError(f"idx must be (B, T) token ids, got shape {tuple(idx.shape)}")
        B, T = idx.shape
        if T > self.config.block_size:
            raise ValueError(f"sequence length {T} exceeds block_size {self.config.block_size}")
        pos = torch.arange(T, device=idx.device)  # (T,)
        x = self.transformer.drop(self.transformer.wte(idx) + self.transformer.wpe(pos))  # (B, T, C)
        maps = []
        for block in self.transformer.h:
            x, att = block(x, return_attn)
            maps.append(att)
        logits = self.lm_head(self.transformer.ln_f(x))  # (B, T, V)
        loss = None
        if targets is not None:
            loss = F.cross_entropy(logits.view(-1, logits.size(-1)), targets.reshape(-1), ignore_index=-1)
        return (logits, loss, maps) if return_attn else (logits, loss)

    def configure_optimizer(self, lr: float, weight_decay: float = 0.1, betas=(0.9, 0.95)) -> torch.optim.AdamW:
        """AdamW with weight decay on matrices (2-D) only, not on biases and LayerNorm gains (nanoGPT / GPT-3)."""
        params = [p for p in self.parameters() if p.requires_grad]
        groups = [{"params": [p for p in params if p.dim() >= 2], "weight_decay": weight_decay},
                  {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0}]
        return torch.optim.AdamW(groups, lr=lr, betas=betas)

    @torch.no_grad()
    def generate(self, idx: torch.Tensor, max_new_tokens: int, temperature: float = 1.0,
                 top_k: int | None = None, top_p: float | None = None,
                 generator: torch.Generator | None = None) -> torch.Tensor:
        """Append `max_new_tokens` sampled tokens to idx (B, T); temperature 0 means greedy (argmax)."""
        if temperature < 0:
            raise ValueError(f"temperature must be >= 0, got {temperature!r}")
        if idx.dim() != 2 or idx.size(1) == 0:
            raise ValueError(f"idx must be a non-empty (B, T) tensor, got shape {tuple(idx.shape)}")
        for _ in range(int(max_new_tokens)):
            context = idx[:, -self.config.block_size:]  # (B, <= block_size)
            logits, _ = self(context)
            logits = logits[:, -1, :]  # (B, V): the next-token distribution
            if temperature == 0:
                nxt = logits.argmax(dim=-1, keepdim=True)  # (B, 1)
            else:
                logits = filter_logits(logits / temperature, top_k, top_p)
                probs = F.softmax(logits, dim=-1)
                nxt = torch.multinomial(probs, num_samples=1, generator=generator)  # (B, 1)
            idx = torch.cat([idx, nxt], dim=1)
        return idx

    # ---- Hugging Face GPT-2 interop -------------------------------------------------------------------

    @classmethod
    def from_hf(cls, hf_model) -> "GPT":
        """A GPT holding the weights of a transformers `GPT2LMHeadModel` (e.g. OpenAI's, or a random one)."""
        c = hf_model.config
        config = GPTConfig(block_size=c.n_positions, vocab_size=c.vocab_size, n_layer=c.n_layer,
                           n_head=c.n_head, n_embd=c.n_embd, dropout=0.0, bias=True)
        with torch.device("meta"):  # skip the random init: every weight is about to be replaced
            model = cls(config)
        model.load_state_dict(hf_to_ours(hf_model.state_dict()), assign=True)
        model.lm_head.weight = model.transformer.wte.weight  # assign=True gave them separate Parameters
        return model

    def to_hf(self):
        """A transformers `GPT2LMHeadModel` with these weights (config: GELU tanh, eps 1e-5, no dropout)."""
        from transformers import GPT2Config, GPT2LMHeadModel

        if not self.config.bias:
            raise ValueError("GPT-2 has biases; a GPTConfig(bias=False) model cannot be converted")
        c = self.config
        hf_config = GPT2Config(vocab_size=c.vocab_size, n_positions=c.block_size, n_embd=c.n_embd,
                               n_layer=c.n_layer, n_head=c.n_head, activation_function="gelu_new",
                               resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0, layer_norm_epsilon=1e-5,
                               bos_token_id=c.vocab_size - 1, eos_token_id=c.vocab_size - 1)
        hf = GPT2LMHeadModel(hf_config)
        missing, unexpected = hf.load_state_dict(ours_to_hf(self.state_dict()), strict=False)
        real_missing = [k for k in missing if not k.endswith((".attn.bias", ".attn.masked_bias"))]
        if real_missing or unexpected:
            raise RuntimeError(f"state dict mismatch: missing {real_missing}, unexpected {unexpected}")
        return hf.eval()


# OpenAI's Conv1D layers store weight as (in, out); nn.Linear as (out, in).
CONV1D = ("attn.c_attn.weight", "attn.c_proj.weight", "mlp.c_fc.weight", "mlp.c_proj.weight")


def hf_to_ours(sd: dict) -> dict:
    """Convert a `GPT2LMHeadModel` state dict: drop the causal-mask buffers, transpose Conv1D weights."""
    out = {}
    for k, v in sd.items():
        if k.endswith((".attn.bias", ".attn.masked_bias")):  # buffers in older transformers, not weights
            continue
        out[k] = v.t().contiguous() if k.endswith(CONV1D) else v.clone()  # never share storage with HF
    if "lm_head.weight" not in out:
        out["lm_head.weight"] = out["transformer.wte.weight"]
    return out


def ours_to_hf(sd: dict) -> dict:
    """The inverse of `hf_to_ours`."""
    return {k: (v.t().contiguous() if k.endswith(CONV1D) else v) for k, v in sd.items()}


def config_dict(model: GPT) -> dict:
    """The config as a plain dict (for caches and results files)."""
    return asdict(model.config)


def load_openai_gpt2(name: str = "gpt2", timeout: float = 3.0):
    """OpenAI's GPT-2 weights as a GPT via `GPT2LMHeadModel.from_pretrained`, or (None, why) when unavailable.

    Never raises for a missing network: it checks `HF_HUB_OFFLINE`, the local cache, then a short TCP
    connection to the hub, and returns the reason it skipped.
    """
    import os
    import socket

    try:
        from huggingface_hub import try_to_load_from_cache
        cached = isinstance(try_to_load_from_cache(name, "config.json"), str)
    except Exception:
        cached = False
    if not cached:
        if os.environ.get("HF_HUB_OFFLINE", "0").lower() in ("1", "true", "yes"):
            return None, "HF_HUB_OFFLINE is set and the weights are not in the local cache"
        try:
            socket.create_connection(("huggingface.co", 443), timeout=timeout).close()
        except OSError as exc:
            return None, f"huggingface.co is unreachable ({type(exc).__name__}) and the weights are not cached"
    try:
        from transformers import GPT2LMHeadModel

        hf = GPT2LMHeadModel.from_pretrained(name, local_files_only=cached)
    except Exception as exc:  # network errors, partial downloads
        return None, f"from_pretrained({name!r}) failed: {type(exc).__name__}: {str(exc)[:200]}"
    return GPT.from_hf(hf).eval(), f"loaded {name} from {'the local cache' if cached else 'the hub'}"


# ---- Serving: the course GPT through the engine's protocol (helpers/serving) ---------------------------------------

@dataclass(frozen=True)
class ServingConfig:
    """What a serving engine needs to know about a model (the same fields as helpers/models/llama.py's LlamaConfig)."""

    n_layers: int
    n_heads: int
    n_kv_heads: int
    head_dim: int
    vocab_size: int
    max_seq_len: int


class GPTForServing(nn.Module):
    """A GPT behind the serving protocol: forward(tokens (N,), positions (N,), attend) -> logits (N, V).

    The same weights, computed token by token: learned positions are looked up at `positions`, and each block's
    attention is delegated to `attend(layer, q, k, v)`, which owns the K/V cache (n_kv_heads == n_heads: GPT-2 has no
    GQA). No RoPE, so q and k go to the backend as projected.
    """

    def __init__(self, gpt: GPT):
        super().__init__()
        self.gpt = gpt.eval()
        c = gpt.config
        self.cfg = ServingConfig(n_layers=c.n_layer, n_heads=c.n_head, n_kv_heads=c.n_head,
                                 head_dim=c.n_embd // c.n_head, vocab_size=c.vocab_size, max_seq_len=c.block_size)

    def forward(self, tokens: torch.Tensor, positions: torch.Tensor, attend, rows: torch.Tensor | None = None):
        if tokens.dim() != 1 or positions.shape != tokens.shape:
            raise ValueError(f"tokens and positions must both be (N,), got {tuple(tokens.shape)} and "
                             f"{tuple(positions.shape)}")
        if len(positions) and (int(positions.min()) < 0 or int(positions.max()) >= self.cfg.max_seq_len):
            raise ValueError(f"positions must lie in [0, {self.cfg.max_seq_len}) (the learned position table)")
        t, (N, H, D) = self.gpt.transformer, (len(tokens), self.cfg.n_heads, self.cfg.head_dim)
        x = t.wte(tokens) + t.wpe(positions)  # (N, C)
        for i, block in enumerate(t.h):
            q, k, v = block.attn.c_attn(block.ln_1(x)).split(H * D, dim=1)  # 3 x (N, C)
            y = attend(i, q.view(N, H, D), k.view(N, H, D), v.view(N, H, D))  # (N, H, D)
            x = x + block.attn.c_proj(y.reshape(N, H * D))  # (N, C)
            x = x + block.mlp(block.ln_2(x))
        if rows is not None:
            x = x[rows]  # (R, C): only the rows whose logits are needed, as Llama.forward
        return self.gpt.lm_head(t.ln_f(x))  # (N or R, V)

    @torch.no_grad()
    def logits(self, idx: torch.Tensor) -> torch.Tensor:
        """(B, T, V): GPT.forward itself, the reference."""
        return self.gpt(idx)[0]
