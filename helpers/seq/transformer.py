"""The transformer of Vaswani et al. (2017), from scratch, and the three variants built from its blocks.

    attention(Q, K, V) = softmax(Q Kᵀ / √d_k + bias, masked) V          scaled_dot_product_attention
    multi-head: h heads of size d/h side by side, concatenated, projected    MultiHeadAttention
    block:  pre-norm   x + Attn(LN(x)),  then  x + FFN(LN(x))                 EncoderBlock / DecoderBlock
            post-norm  LN(x + Attn(x)),  then  LN(x + FFN(x))  (the original paper)
    encoder-only (BERT): bidirectional blocks, a [CLS] vector pooled         EncoderClassifier
    decoder-only (GPT):  causal blocks — the course GPT, helpers/models/gpt.py (its Block is our causal
                         pre-norm EncoderBlock: `encoder_block_from_gpt` copies one into the other);
                         CausalLM is the same stack with a choice of positional scheme, for experiments
    encoder-decoder (T5 / Vaswani): a decoder block adds cross-attention on the encoder's output   Seq2SeqTransformer

Masks are boolean with True = "may attend" (the convention of `F.scaled_dot_product_attention`); a key
mask (B, Tk) marks the real tokens of padded sequences. A query row whose every key is masked has no
distribution: its weights are defined as all zero (so its output is 0, never NaN).
"""
from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn import functional as F

from .positional import LearnedPositions, SinusoidalPositions, alibi_bias

# ---- attention -------------------------------------------------------------------------------------------


def causal_mask(n_query: int, n_key: int | None = None, device=None) -> torch.Tensor:
    """(Tq, Tk) bool, True on and below the diagonal (query i sees keys ≤ i; last query aligned to last key)."""
    n_key = n_query if n_key is None else n_key
    return torch.ones(n_query, n_key, dtype=torch.bool, device=device).tril(diagonal=n_key - n_query)


def padding_mask(lengths, max_len: int | None = None, device=None) -> torch.Tensor:
    """(B, T) bool, True at the first lengths[b] positions of row b (the real tokens)."""
    lengths = torch.as_tensor(lengths, device=device)
    if lengths.dim() != 1 or (lengths < 0).any():
        raise ValueError(f"lengths must be a 1-D tensor of non-negative ints, got {lengths.tolist()}")
    T = int(lengths.max()) if max_len is None else int(max_len)
    if (lengths > T).any():
        raise ValueError(f"a length exceeds max_len={T}: {lengths.tolist()}")
    return torch.arange(T, device=lengths.device)[None, :] < lengths[:, None]  # (B, T)


def attention_weights(q: torch.Tensor, k: torch.Tensor, mask: torch.Tensor | None = None,
                      bias: torch.Tensor | None = None) -> torch.Tensor:
    """softmax(q kᵀ / √d + bias) over the allowed keys: (..., Tq, d), (..., Tk, d) → (..., Tq, Tk).

    Fully masked rows get weight 0 everywhere (no NaN, no gradient).
    """
    scores = q @ k.transpose(-2, -1) / math.sqrt(q.size(-1))  # (..., Tq, Tk)
    if bias is not None:
        scores = scores + bias
    if mask is None:
        return torch.softmax(scores, dim=-1)
    dead = ~mask.any(dim=-1, keepdim=True)  # (..., Tq, 1) rows with nothing to attend to
    scores = scores.masked_fill(~mask, float("-inf")).masked_fill(dead, 0.0)
    return torch.softmax(scores, dim=-1).masked_fill(~mask | dead, 0.0)


def scaled_dot_product_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
                                 mask: torch.Tensor | None = None, is_causal: bool = False,
                                 bias: torch.Tensor | None = None, dropout_p: float = 0.0,
                                 return_weights: bool = False):
    """Attention of q (..., Tq, d) on k (..., Tk, d) / v (..., Tk, dv) → (..., Tq, dv) [, weights (..., Tq, Tk)].

    `mask`: bool, broadcastable to (..., Tq, Tk), True = may attend; `is_causal` adds the causal mask;
    `bias`: float, added to the scores (ALiBi, relative positions).
    """
    if q.size(-1) != k.size(-1):
        raise ValueError(f"query and key sizes differ: q {tuple(q.shape)}, k {tuple(k.shape)}")
    if k.size(-2) != v.size(-2):
        raise ValueError(f"keys and values have different lengths: k {tuple(k.shape)}, v {tuple(v.shape)}")
    if mask is not None and mask.dtype != torch.bool:
        raise TypeError(f"mask must be bool (True = may attend), got {mask.dtype}; pass scores offsets as bias=")
    Tq, Tk = q.size(-2), k.size(-2)
    if mask is not None:
        try:
            torch.broadcast_shapes(mask.shape, q.shape[:-2] + (Tq, Tk))
        except RuntimeError:
            raise ValueError(f"mask {tuple(mask.shape)} does not broadcast to scores "
                             f"{tuple(q.shape[:-2]) + (Tq, Tk)}") from None
    if is_causal:
        causal = causal_mask(Tq, Tk, q.device)
        mask = causal if mask is None else mask & causal
    w = attention_weights(q, k, mask, bias)  # (..., Tq, Tk)
    out = F.dropout(w, dropout_p) @ v if dropout_p > 0 else w @ v  # (..., Tq, dv)
    return (out, w) if return_weights else out


def split_heads(x: torch.Tensor, n_head: int) -> torch.Tensor:
    """(B, T, C) → (B, n_head, T, C / n_head): each head gets its own slice of the features."""
    B, T, C = x.shape
    return x.view(B, T, n_head, C // n_head).transpose(1, 2)


def merge_heads(x: torch.Tensor) -> torch.Tensor:
    """(B, n_head, T, hs) → (B, T, n_head · hs): the heads' outputs side by side (concatenation)."""
    B, nh, T, hs = x.shape
    return x.transpose(1, 2).reshape(B, T, nh * hs)


class MultiHeadAttention(nn.Module):
    """h heads: project q, k, v; split; attend in each head; concatenate; project back (Vaswani §3.2.2)."""

    def __init__(self, d_model: int, n_head: int, dropout: float = 0.0, bias: bool = True):
        super().__init__()
        if d_model % n_head:
            raise ValueError(f"d_model={d_model} is not divisible by n_head={n_head}")
        self.d_model, self.n_head, self.dropout = d_model, n_head, dropout
        self.q_proj = nn.Linear(d_model, d_model, bias=bias)
        self.k_proj = nn.Linear(d_model, d_model, bias=bias)
        self.v_proj = nn.Linear(d_model, d_model, bias=bias)
        self.out_proj = nn.Linear(d_model, d_model, bias=bias)

    def forward(self, query: torch.Tensor, memory: torch.Tensor | None = None, key_mask: torch.Tensor | None = None,
                attn_mask: torch.Tensor | None = None, is_causal: bool = False, bias: torch.Tensor | None = None,
                return_weights: bool = False):
        """query (B, Tq, C) attends to memory (B, Tk, C) (itself when None) → (B, Tq, C), weights (B, nh, Tq, Tk).

        key_mask (B, Tk): True at real tokens; attn_mask (Tq, Tk) or (B, Tq, Tk): True = may attend.
        """
        memory = query if memory is None else memory
        if query.dim() != 3 or memory.dim() != 3 or query.size(0) != memory.size(0):
            raise ValueError(f"query and memory must be (B, T, C) with one B: {tuple(query.shape)}, {tuple(memory.shape)}")
        B, Tk = memory.shape[:2]
        mask = None
        if key_mask is not None:
            if key_mask.shape != (B, Tk):
                raise ValueError(f"key_mask must be (B, Tk) = {(B, Tk)}, got {tuple(key_mask.shape)}")
            mask = key_mask[:, None, None, :]  # (B, 1, 1, Tk)
        if attn_mask is not None:
            am = attn_mask if attn_mask.dim() == 2 else attn_mask[:, None]  # (Tq, Tk) or (B, 1, Tq, Tk)
            mask = am if mask is None else mask & am
        q = split_heads(self.q_proj(query), self.n_head)  # (B, nh, Tq, hs)
        k = split_heads(self.k_proj(memory), self.n_head)  # (B, nh, Tk, hs)
        v = split_heads(self.v_proj(memory), self.n_head)
        y, w = scaled_dot_product_attention(q, k, v, mask, is_causal, bias,
                                            self.dropout if self.training else 0.0, return_weights=True)
        return self.out_proj(merge_heads(y)), (w if return_weights else None)  # (B, Tq, C)

    @torch.no_grad()
    def load_torch(self, mha: nn.MultiheadAttention) -> "MultiHeadAttention":
        """Copy the weights of a `nn.MultiheadAttention` (same d_model, n_head; packed in_proj) into this module."""
        if mha.embed_dim != self.d_model or mha.num_heads != self.n_head or mha.in_proj_weight is None:
            raise ValueError("nn.MultiheadAttention with the same embed_dim, num_heads and a packed in_proj needed")
        for proj, w in zip((self.q_proj, self.k_proj, self.v_proj), mha.in_proj_weight.chunk(3)):
            proj.weight.copy_(w)
        if mha.in_proj_bias is not None:
            for proj, b in zip((self.q_proj, self.k_proj, self.v_proj), mha.in_proj_bias.chunk(3)):
                proj.bias.copy_(b)
        self.out_proj.weight.copy_(mha.out_proj.weight)
        if mha.out_proj.bias is not None:
            self.out_proj.bias.copy_(mha.out_proj.bias)
        return self

# ---- blocks ----------------------------------------------------------------------------------------------


ACTIVATIONS = {"relu": nn.ReLU, "gelu": nn.GELU, "gelu_tanh": lambda: nn.GELU(approximate="tanh")}


class FeedForward(nn.Module):
    """Position-wise two-layer MLP: C → d_ff → activation → C (the same weights at every position)."""

    def __init__(self, d_model: int, d_ff: int, activation: str = "gelu", dropout: float = 0.0, bias: bool = True):
        super().__init__()
        if activation not in ACTIVATIONS:
            raise ValueError(f"activation must be one of {sorted(ACTIVATIONS)}, got {activation!r}")
        self.fc1, self.act = nn.Linear(d_model, d_ff, bias=bias), ACTIVATIONS[activation]()
        self.fc2, self.drop = nn.Linear(d_ff, d_model, bias=bias), nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.drop(self.fc2(self.act(self.fc1(x))))  # (B, T, C)


def _sublayer(x, f, norm, norm_first: bool, drop):
    """One residual sub-layer: pre-norm x + f(LN(x)), post-norm LN(x + f(x)); f returns (y, weights)."""
    if norm_first:
        y, w = f(norm(x))
        return x + drop(y), w
    y, w = f(x)
    return norm(x + drop(y)), w


class EncoderBlock(nn.Module):
    """Self-attention then feed-forward, each in a residual sub-layer (pre- or post-norm).

    `causal=True` turns it into a decoder-only (GPT) block: the same weights, a causal mask.
    """

    def __init__(self, d_model: int, n_head: int, d_ff: int | None = None, dropout: float = 0.0,
                 norm_first: bool = True, activation: str = "gelu", causal: bool = False, bias: bool = True):
        super().__init__()
        self.norm_first, self.causal = norm_first, causal
        self.ln1, self.ln2 = nn.LayerNorm(d_model, bias=bias), nn.LayerNorm(d_model, bias=bias)
        self.attn = MultiHeadAttention(d_model, n_head, dropout, bias)
        self.ffn = FeedForward(d_model, d_ff or 4 * d_model, activation, dropout, bias)
        self.drop = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, key_mask: torch.Tensor | None = None, bias: torch.Tensor | None = None,
                return_weights: bool = False):
        """x (B, T, C) → (B, T, C), attention weights (B, nh, T, T) or None."""
        x, w = _sublayer(x, lambda h: self.attn(h, key_mask=key_mask, is_causal=self.causal, bias=bias,
                                                return_weights=return_weights), self.ln1, self.norm_first, self.drop)
        x, _ = _sublayer(x, lambda h: (self.ffn(h), None), self.ln2, self.norm_first, nn.Identity())
        return x, w


class DecoderBlock(nn.Module):
    """Causal self-attention, cross-attention on the encoder output (memory), feed-forward: three sub-layers."""

    def __init__(self, d_model: int, n_head: int, d_ff: int | None = None, dropout: float = 0.0,
                 norm_first: bool = True, activation: str = "gelu", bias: bool = True):
        super().__init__()
        self.norm_first = norm_first
        self.ln1, self.ln2, self.ln3 = (nn.LayerNorm(d_model, bias=bias) for _ in range(3))
        self.self_attn = MultiHeadAttention(d_model, n_head, dropout, bias)
        self.cross_attn = MultiHeadAttention(d_model, n_head, dropout, bias)
        self.ffn = FeedForward(d_model, d_ff or 4 * d_model, activation, dropout, bias)
        self.drop = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, memory: torch.Tensor, memory_mask: torch.Tensor | None = None,
                tgt_mask: torch.Tensor | None = None, return_weights: bool = False):
        """x (B, T, C) target so far, memory (B, S, C) → (B, T, C), (self weights, cross weights)."""
        x, ws = _sublayer(x, lambda h: self.self_attn(h, key_mask=tgt_mask, is_causal=True,
                                                      return_weights=return_weights), self.ln1, self.norm_first, self.drop)
        x, wc = _sublayer(x, lambda h: self.cross_attn(h, memory, key_mask=memory_mask,
                                                       return_weights=return_weights), self.ln2, self.norm_first, self.drop)
        x, _ = _sublayer(x, lambda h: (self.ffn(h), None), self.ln3, self.norm_first, nn.Identity())
        return x, (ws, wc)


@torch.no_grad()
def encoder_block_from_gpt(block, n_head: int) -> EncoderBlock:
    """Our causal pre-norm EncoderBlock holding the weights of a course GPT `Block` (helpers/models/gpt.py).

    GPT packs q, k, v in one `c_attn` matrix; we keep three. Same computation, so the outputs agree.
    """
    C = block.ln_1.weight.numel()
    bias = block.attn.c_attn.bias is not None
    ours = EncoderBlock(C, n_head, block.mlp.c_fc.out_features, 0.0, norm_first=True, activation="gelu_tanh",
                        causal=True, bias=bias)
    ours.ln1.load_state_dict(block.ln_1.state_dict())
    ours.ln2.load_state_dict(block.ln_2.state_dict())
    for proj, w in zip((ours.attn.q_proj, ours.attn.k_proj, ours.attn.v_proj), block.attn.c_attn.weight.split(C)):
        proj.weight.copy_(w)
    if bias:
        for proj, b in zip((ours.attn.q_proj, ours.attn.k_proj, ours.attn.v_proj), block.attn.c_attn.bias.split(C)):
            proj.bias.copy_(b)
    ours.attn.out_proj.load_state_dict(block.attn.c_proj.state_dict())
    ours.ffn.fc1.load_state_dict(block.mlp.c_fc.state_dict())
    ours.ffn.fc2.load_state_dict(block.mlp.c_proj.state_dict())
    return ours.eval()

# ---- the three variants ----------------------------------------------------------------------------------


def _positions(kind: str, max_len: int, d_model: int) -> nn.Module:
    if kind == "sinusoidal":
        return SinusoidalPositions(d_model)
    if kind == "learned":
        return LearnedPositions(max_len, d_model)
    if kind in ("alibi", "none"):
        return nn.Identity()  # ALiBi acts on the attention scores, not the embeddings
    raise ValueError(f"positions must be 'sinusoidal', 'learned', 'alibi' or 'none', got {kind!r}")


def _init(module: nn.Module) -> None:
    """GPT-2's initialisation: N(0, 0.02) for linear and embedding weights, zero biases."""
    if isinstance(module, (nn.Linear, nn.Embedding)):
        nn.init.normal_(module.weight, std=0.02)
        if isinstance(module, nn.Linear) and module.bias is not None:
            nn.init.zeros_(module.bias)


def _optimizer(model: nn.Module, lr: float, weight_decay: float, betas) -> torch.optim.AdamW:
    """AdamW with decay on matrices only (as the course GPT's `configure_optimizer`)."""
    params = [p for p in model.parameters() if p.requires_grad]
    return torch.optim.AdamW([{"params": [p for p in params if p.dim() >= 2], "weight_decay": weight_decay},
                              {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0}], lr=lr, betas=betas)


class EncoderClassifier(nn.Module):
    """BERT-style encoder-only classifier: [CLS] + token embeddings + positions → bidirectional blocks →
    the [CLS] position's final vector → linear head. Padding (token `pad_id`) is masked out of attention."""

    def __init__(self, vocab_size: int, n_classes: int, d_model: int = 64, n_head: int = 4, n_layer: int = 2,
                 d_ff: int | None = None, dropout: float = 0.1, max_len: int = 128, positions: str = "learned",
                 norm_first: bool = True, pad_id: int = 0):
        super().__init__()
        self.pad_id, self.n_head, self.positions = pad_id, n_head, positions
        self.tok = nn.Embedding(vocab_size, d_model, padding_idx=pad_id)
        self.cls = nn.Parameter(torch.zeros(1, 1, d_model))  # the learned [CLS] vector, prepended
        self.pos = _positions(positions, max_len + 1, d_model)
        self.drop = nn.Dropout(dropout)
        self.blocks = nn.ModuleList(EncoderBlock(d_model, n_head, d_ff, dropout, norm_first) for _ in range(n_layer))
        self.ln_f = nn.LayerNorm(d_model) if norm_first else nn.Identity()
        self.head = nn.Linear(d_model, n_classes)
        self.apply(_init)
        nn.init.normal_(self.cls, std=0.02)

    def forward(self, ids: torch.Tensor, return_weights: bool = False):
        """ids (B, T) padded with pad_id → logits (B, n_classes) [, per-layer weights (B, nh, T+1, T+1)]."""
        B, T = ids.shape
        x = torch.cat([self.cls.expand(B, -1, -1), self.tok(ids)], dim=1)  # (B, T+1, C)
        x = self.drop(self.pos(x))
        key_mask = torch.cat([torch.ones(B, 1, dtype=torch.bool, device=ids.device), ids != self.pad_id], dim=1)
        bias = alibi_bias(self.n_head, T + 1, causal=False).to(x) if self.positions == "alibi" else None
        maps = []
        for block in self.blocks:
            x, w = block(x, key_mask, bias, return_weights)
            maps.append(w)
        logits = self.head(self.ln_f(x)[:, 0])  # (B, n_classes): the [CLS] position
        return (logits, maps) if return_weights else logits


class CausalLM(nn.Module):
    """Decoder-only LM from causal EncoderBlocks with a choice of positions (sinusoidal / learned / ALiBi /
    none); `causal=False` removes the mask (Exercise 5 shows why a language model must not). Same call signature as the course GPT — `model(idx, targets) → (logits, loss)`,
    `configure_optimizer` — so `helpers.lm.train` and `evaluate_nll` drive it."""

    def __init__(self, vocab_size: int, d_model: int = 64, n_head: int = 4, n_layer: int = 2,
                 max_len: int = 256, positions: str = "learned", norm_first: bool = True, dropout: float = 0.0,
                 causal: bool = True):
        super().__init__()
        self.n_head, self.positions, self.max_len, self.causal = n_head, positions, max_len, causal
        # Vaswani et al. scale token embeddings by √d next to the unit-amplitude sinusoids
        self.scale = math.sqrt(d_model) if positions == "sinusoidal" else 1.0
        self.tok = nn.Embedding(vocab_size, d_model)
        self.pos = _positions(positions, max_len, d_model)
        self.blocks = nn.ModuleList(EncoderBlock(d_model, n_head, None, dropout, norm_first, causal=causal)
                                    for _ in range(n_layer))
        self.ln_f = nn.LayerNorm(d_model) if norm_first else nn.Identity()
        self.head = nn.Linear(d_model, vocab_size, bias=False)
        self.apply(_init)

    def forward(self, idx: torch.Tensor, targets: torch.Tensor | None = None, return_weights: bool = False):
        B, T = idx.shape
        x = self.pos(self.tok(idx) * self.scale)  # (B, T, C)
        bias = alibi_bias(self.n_head, T, causal=self.causal).to(x) if self.positions == "alibi" else None
        maps = []
        for block in self.blocks:
            x, w = block(x, None, bias, return_weights)
            maps.append(w)
        logits = self.head(self.ln_f(x))  # (B, T, V)
        loss = None if targets is None else F.cross_entropy(logits.flatten(0, 1), targets.flatten())
        return (logits, loss, maps) if return_weights else (logits, loss)

    def configure_optimizer(self, lr: float, weight_decay: float = 0.1, betas=(0.9, 0.95)):
        return _optimizer(self, lr, weight_decay, betas)


class Seq2SeqTransformer(nn.Module):
    """Encoder–decoder (Vaswani et al.; T5's shape): the encoder reads the source bidirectionally, the decoder
    predicts the target left to right, cross-attending to the encoder output. Sinusoidal positions, the
    target embedding tied to the output layer. Token `pad_id` is padding in both languages."""

    def __init__(self, src_vocab: int, tgt_vocab: int, d_model: int = 128, n_head: int = 4, n_enc: int = 2,
                 n_dec: int = 2, d_ff: int | None = None, dropout: float = 0.1, norm_first: bool = True, pad_id: int = 0):
        super().__init__()
        self.pad_id, self.scale = pad_id, math.sqrt(d_model)
        self.src_tok = nn.Embedding(src_vocab, d_model, padding_idx=pad_id)
        self.tgt_tok = nn.Embedding(tgt_vocab, d_model, padding_idx=pad_id)
        self.pos, self.drop = SinusoidalPositions(d_model), nn.Dropout(dropout)
        self.encoder = nn.ModuleList(EncoderBlock(d_model, n_head, d_ff, dropout, norm_first) for _ in range(n_enc))
        self.decoder = nn.ModuleList(DecoderBlock(d_model, n_head, d_ff, dropout, norm_first) for _ in range(n_dec))
        self.ln_enc = nn.LayerNorm(d_model) if norm_first else nn.Identity()
        self.ln_dec = nn.LayerNorm(d_model) if norm_first else nn.Identity()
        self.out = nn.Linear(d_model, tgt_vocab, bias=False)
        self.apply(_init)
        self.out.weight = self.tgt_tok.weight  # tied (Press & Wolf 2017)

    def encode(self, src: torch.Tensor, return_weights: bool = False):
        """src (B, S) → memory (B, S, C), src key mask (B, S) [, encoder weights]."""
        mask = src != self.pad_id
        x = self.drop(self.pos(self.src_tok(src) * self.scale))
        maps = []
        for block in self.encoder:
            x, w = block(x, mask, None, return_weights)
            maps.append(w)
        return (self.ln_enc(x), mask, maps) if return_weights else (self.ln_enc(x), mask)

    def decode(self, tgt: torch.Tensor, memory: torch.Tensor, memory_mask: torch.Tensor, return_weights: bool = False):
        """tgt (B, T) target prefix (starting with <bos>) → next-token logits (B, T, V) [, (self, cross) weights]."""
        x = self.drop(self.pos(self.tgt_tok(tgt) * self.scale))
        maps = []
        for block in self.decoder:
            x, w = block(x, memory, memory_mask, None, return_weights)
            maps.append(w)
        logits = self.out(self.ln_dec(x))
        return (logits, maps) if return_weights else logits

    def forward(self, src: torch.Tensor, tgt_in: torch.Tensor) -> torch.Tensor:
        """Teacher forcing: logits (B, T, V) for every target position at once."""
        if src.size(0) != tgt_in.size(0):
            raise ValueError(f"source and target batches differ: {src.size(0)} vs {tgt_in.size(0)}")
        memory, mask = self.encode(src)
        return self.decode(tgt_in, memory, mask)

    def configure_optimizer(self, lr: float, weight_decay: float = 0.0, betas=(0.9, 0.98)):
        return _optimizer(self, lr, weight_decay, betas)


def count_parameters(model: nn.Module) -> int:
    """Trainable parameters, each shared tensor counted once."""
    return sum(p.numel() for p in {id(p): p for p in model.parameters() if p.requires_grad}.values())
