"""AWQ: activation-aware weight quantization (Lin et al., 2024, "AWQ: Activation-aware Weight Quantization
for LLM Compression and Acceleration", §3; reference code mit-han-lab/llm-awq, awq/quantize/auto_scale.py).

Observation (§3.1, Table 1): a weight's importance is set by the *activation* it multiplies, not by its own size.
Keeping the ~1% input channels with the largest mean |x| in full precision recovers most of the loss of
low-bit round-to-nearest (RTN); picking them by weight magnitude or at random does not (`salient_channel_experiment`).

Mixed precision is awkward on hardware, so AWQ protects those channels by *scaling* instead (§3.2). For
y = W x and any s > 0,  W x = (W diag(s)) (diag(s)⁻¹ x):  multiply input column j of W by s_j and divide
the input x_j by s_j — the float model is unchanged. Rounding error of a column is ~ a fraction of its
group's step, which barely moves when one column is scaled up, so the *relative* error of the salient
columns shrinks by ~1/s_j. s = s_x^α with s_x = mean |x| per input channel; α ∈ [0, 1) is grid-searched
(20 points) to minimise the error of the block's output on calibration data (`search_scale`), then 1/s is
folded into the op that produces x (`fold_scale`): an RMSNorm weight, or the rows of the linear before.

Scaling groups of one Llama decoder layer (as the reference's `auto_scale_block`):

    input_layernorm          → q_proj, k_proj, v_proj      loss on the attention output
    v_proj (rows)            → o_proj                      loss on o_proj's output
    post_attention_layernorm → gate_proj, up_proj          loss on the MLP output
    up_proj (rows)           → down_proj                   loss on down_proj's output

With grouped-query attention (9 query heads sharing 3 KV heads here) one v_proj row feeds n_rep o_proj
input channels, so the reference skips v → o. We keep it by *tying* the scale across the query heads that
share a KV head (mean of their s_x), which folds into v_proj exactly.

Quantizer: RTN, asymmetric (scale + zero-point), per output channel or per group of `group_size` input
weights — `helpers.quant.affine` (whose range always contains 0; the reference's does not: the same for
any group holding both signs).
"""
from __future__ import annotations

import math

import torch
from torch import nn

from .affine import QSpec

# --- the quantizer -------------------------------------------------------------------------------------


def weight_spec(bits: int, group_size: int | None) -> QSpec:
    """AWQ's weight quantizer: asymmetric RTN, one (scale, zero) per output row (group_size None) or per
    `group_size` consecutive input weights of a row."""
    if group_size is None:
        return QSpec(bits=bits, symmetric=False, granularity="channel", axis=0)
    if not isinstance(group_size, int) or group_size < 1:
        raise ValueError(f"group_size must be a positive int or None (per channel), got {group_size!r}")
    return QSpec(bits=bits, symmetric=False, granularity="group", axis=1, group_size=group_size)


def rtn(w: torch.Tensor, bits: int, group_size: int | None) -> torch.Tensor:
    """Round-to-nearest fake quantization of a weight (out, in)."""
    if w.ndim != 2:
        raise ValueError(f"expected a 2-d weight (out, in), got shape {tuple(w.shape)}")
    return weight_spec(bits, group_size).calibrate(w).fake_quantize(w).to(w.dtype)


def _linears(layer: nn.Module) -> dict[str, nn.Linear]:
    return {n: m for n, m in layer.named_modules() if isinstance(m, nn.Linear)}


@torch.no_grad()
def quantize_layer_rtn(layer: nn.Module, bits: int, group_size: int | None) -> None:
    """Fake-quantize every nn.Linear inside `layer`, in place."""
    for m in _linears(layer).values():
        m.weight.copy_(rtn(m.weight, bits, group_size))


@torch.no_grad()
def quantize_model_rtn(model: nn.Module, bits: int, group_size: int | None) -> nn.Module:
    """The RTN baseline: every linear of the decoder layers fake-quantized (lm_head / embeddings stay float)."""
    for layer in _decoder_layers(model):
        quantize_layer_rtn(layer, bits, group_size)
    return model


# --- scale search and folding (§3.2) -------------------------------------------------------------------


def act_scale(x: torch.Tensor) -> torch.Tensor:
    """s_x: mean |x| per input channel over every token of x (..., in) → (in,)."""
    if not isinstance(x, torch.Tensor) or not x.is_floating_point():
        raise TypeError("x must be a floating-point tensor of activations (..., in)")
    return x.detach().abs().reshape(-1, x.shape[-1]).float().mean(0)


def _tie_heads(v: torch.Tensor, n_rep: int, head_dim: int) -> torch.Tensor:
    """Average a per-channel vector over the n_rep query heads that share one KV head (GQA), keep its shape.
    Channel (h, d) of o_proj's input reads KV head h // n_rep, so the layout is (n_kv, n_rep, head_dim)."""
    if n_rep == 1:
        return v
    g = v.reshape(-1, n_rep, head_dim)                            # (n_kv, n_rep, head_dim)
    return g.mean(1, keepdim=True).expand_as(g).reshape(-1)


@torch.no_grad()
def search_scale(block, linears: list[nn.Linear], x: torch.Tensor, bits: int, group_size: int | None,
                 n_grid: int = 20, n_rep: int = 1, head_dim: int | None = None, s_x: torch.Tensor | None = None):
    """Grid-search AWQ's per-input-channel scale for `linears`, which all read `x` inside `block`.

    block: a callable x → output that runs through `linears` (the module whose output error we minimise).
    s_x: mean |x| per channel (default: from x; pass it to take statistics on more tokens than the search).
    For α = 0, 1/n_grid, …: s = s_x^α normalised by sqrt(max s · min s); each linear's weight becomes
    Q(W diag(s)) diag(s)⁻¹ (the float block would be unchanged); keep the α with the least output MSE.
    Returns (s (in,), α, losses per α). The weights are restored before returning.
    """
    if not linears or any(fc.in_features != x.shape[-1] for fc in linears):
        raise ValueError("every linear must read x: in_features must equal x.shape[-1]")
    if n_grid < 1:
        raise ValueError(f"n_grid must be >= 1, got {n_grid}")
    y = block(x)                                                  # float reference output
    s_x = act_scale(x) if s_x is None else s_x                    # (in,)
    if n_rep > 1:
        if head_dim is None:
            raise ValueError("tying scales across query heads (n_rep > 1) needs head_dim")
        s_x = _tie_heads(s_x, n_rep, head_dim)
    originals = [fc.weight.clone() for fc in linears]             # (out, in) each
    best = (math.inf, None, None)
    losses = []
    try:
        for k in range(n_grid):
            alpha = k / n_grid
            s = s_x.pow(alpha).clamp(min=1e-4)
            s = s / (s.max() * s.min()).sqrt()                    # centre the scales around 1 (as the reference)
            for fc, w in zip(linears, originals):
                fc.weight.copy_(rtn(w * s, bits, group_size) / s)
            loss = float((block(x) - y).double().pow(2).mean())
            losses.append(loss)
            if loss < best[0]:
                best = (loss, s.clone(), alpha)
    finally:
        for fc, w in zip(linears, originals):
            fc.weight.copy_(w)
    return best[1], best[2], losses


@torch.no_grad()
def fold_scale(prev: nn.Module, linears: list[nn.Linear], s: torch.Tensor, head_dim: int | None = None) -> None:
    """W ← W diag(s) for each linear, and divide the op that produces their input by s, in place:
    an RMSNorm / LayerNorm weight (in,), or the output rows of a previous nn.Linear. If `prev` has fewer
    rows than s (GQA: v_proj → o_proj), s must be tied across query heads; v_proj takes one copy per KV head."""
    if bool((s <= 0).any()) or not bool(torch.isfinite(s).all()):
        raise ValueError("scales must be positive and finite")
    for fc in linears:
        fc.weight.mul_(s.view(1, -1))
    if isinstance(prev, nn.Linear):
        s_prev = s
        if prev.out_features != s.numel():
            if head_dim is None or s.numel() % prev.out_features:
                raise ValueError(f"{prev.out_features} rows of the previous linear cannot absorb {s.numel()} scales"
                                 " (GQA needs head_dim)")
            n_rep = s.numel() // prev.out_features
            g = s.view(-1, n_rep, head_dim)                          # (n_kv, n_rep, head_dim)
            if not torch.equal(g, g[:, :1].expand_as(g)):
                raise ValueError("under GQA the scales must be equal across the query heads sharing a KV head")
            s_prev = g[:, 0].reshape(-1)                             # one per KV channel
        prev.weight.div_(s_prev.view(-1, 1))
        if prev.bias is not None:
            prev.bias.div_(s_prev)
    elif hasattr(prev, "weight") and prev.weight.ndim == 1:
        prev.weight.div_(s)
        if getattr(prev, "bias", None) is not None:
            prev.bias.div_(s)
    else:
        raise TypeError(f"cannot fold a scale into {type(prev).__name__}: need a norm with a weight or an nn.Linear")


@torch.no_grad()
def clip_search(w: torch.Tensor, x: torch.Tensor, bits: int, group_size: int | None, n_grid: int = 20,
                max_shrink: float = 0.5, n_tokens: int = 256) -> torch.Tensor:
    """The reference's `auto_clip_layer`: per output row and group, clamp the weights to ±r·max|w| for
    r = 1, 0.95, …, > 1 - max_shrink, keep the r whose RTN-quantized group gives the least error on that
    group's contribution to the output (on `n_tokens` evenly spaced tokens of x). Returns the clamped w;
    quantize it afterwards. Clipping trades a larger error on the few extreme weights for a finer step."""
    out_f, in_f = w.shape
    gs = in_f if group_size is None else group_size
    if x.shape[-1] != in_f:
        raise ValueError(f"x has {x.shape[-1]} channels, the weight reads {in_f}")
    x = x.reshape(-1, in_f)
    x = x[:: max(1, x.shape[0] // n_tokens)][:n_tokens]                         # (n, in)
    xg = x.reshape(x.shape[0], -1, gs).transpose(0, 1)                          # (G, n, gs)

    def contributions(v):                                                       # (G, n, out): x_g · w_g per group
        return torch.bmm(xg, v.reshape(out_f, -1, gs).permute(1, 2, 0))

    ref = contributions(w)
    wg = w.reshape(out_f, -1, gs)                                               # (out, G, gs)
    amax = wg.abs().amax(-1, keepdim=True)                                      # (out, G, 1)
    best_err = torch.full(amax.shape[:2], math.inf)                             # (out, G)
    best = amax.clone()
    for i in range(int(max_shrink * n_grid)):
        m = amax * (1 - i / n_grid)
        w_hat = rtn(torch.clamp(wg, -m, m).reshape(out_f, in_f), bits, group_size)
        err = (contributions(w_hat) - ref).pow(2).mean(1).T                     # (out, G)
        better = err < best_err
        best_err = torch.where(better, err, best_err)
        best = torch.where(better.unsqueeze(-1), m, best)
    return torch.clamp(wg, -best, best).reshape(out_f, in_f)


# --- one Llama decoder layer ----------------------------------------------------------------------------


def _capture_inputs(layer: nn.Module, names: list[str], run) -> dict[str, torch.Tensor]:
    """Run `run()` and record the input of each named submodule of `layer`."""
    mods = dict(layer.named_modules())
    seen, hooks = {}, []
    for n in names:
        hooks.append(mods[n].register_forward_hook(lambda m, inp, out, n=n: seen.__setitem__(n, inp[0].detach())))
    try:
        run()
    finally:
        for h in hooks:
            h.remove()
    return seen


def _subsample(x: torch.Tensor, n_tokens: int | None, whole_sequences: bool) -> torch.Tensor:
    """About n_tokens of x (batch, seq, C): the first sequences, or evenly spaced tokens (1, n, C)."""
    if n_tokens is None or n_tokens >= x.shape[0] * x.shape[1]:
        return x
    if whole_sequences:
        return x[:max(1, n_tokens // x.shape[1])]
    flat = x.reshape(-1, x.shape[-1])
    return flat[:: flat.shape[0] // n_tokens][:n_tokens].unsqueeze(0)


@torch.no_grad()
def awq_layer(layer: nn.Module, x: torch.Tensor, kwargs: dict, bits: int, group_size: int | None,
              n_grid: int = 20, n_tokens: int | None = 512, quantize: bool = True, clip: bool = False) -> dict:
    """AWQ on one LlamaDecoderLayer, in place: search the four groups' scales on the layer's float inputs
    x (batch, seq, hidden), fold them in (float output unchanged), then RTN-quantize its linears.

    kwargs: what the decoder passes the layer (rotary `position_embeddings`, mask; batch 1, broadcast), as
    `helpers.quant.evaluate.sequential` / `layer_kwargs` give it. n_tokens: measure the search loss on about
    this many tokens (None: all) — evenly spaced over all sequences for the token-wise blocks (o, MLP, down),
    whole sequences for attention; s_x always uses all of x. The 20-point search is most of the cost.
    clip: then run the reference's clipping search (`clip_search`) on every linear but q_proj and k_proj
    (whose outputs meet in q·kᵀ, where a per-linear error says little). Returns {group: α}.
    """
    if x.ndim != 3:
        raise ValueError(f"x must be the layer's input (batch, seq, hidden), got shape {tuple(x.shape)}")
    if "position_embeddings" not in kwargs:
        raise ValueError("kwargs must hold the rotary position_embeddings (see evaluate.layer_kwargs)")
    attn, mlp = layer.self_attn, layer.mlp
    feats = _capture_inputs(layer, ["self_attn.q_proj", "self_attn.o_proj", "mlp.gate_proj", "mlp.down_proj"],
                            lambda: layer(x, **kwargs))
    attn_kwargs = {k: v for k, v in kwargs.items() if k != "hidden_states"}
    head_dim = attn.head_dim
    n_rep = attn.o_proj.in_features // attn.v_proj.out_features
    groups = [  # (name, previous op, linears, block whose output error is measured, its input)
        ("qkv", layer.input_layernorm, [attn.q_proj, attn.k_proj, attn.v_proj],
         lambda t: attn(t, **attn_kwargs)[0], feats["self_attn.q_proj"]),
        ("o", attn.v_proj, [attn.o_proj], attn.o_proj, feats["self_attn.o_proj"]),
        ("gate_up", layer.post_attention_layernorm, [mlp.gate_proj, mlp.up_proj], mlp, feats["mlp.gate_proj"]),
        ("down", mlp.up_proj, [mlp.down_proj], mlp.down_proj, feats["mlp.down_proj"]),
    ]
    found = []
    for name, prev, fcs, block, inp in groups:
        rep = n_rep if name == "o" else 1
        sub = _subsample(inp, n_tokens, whole_sequences=name == "qkv")
        s, alpha, _ = search_scale(block, fcs, sub, bits, group_size, n_grid, n_rep=rep,
                                   head_dim=head_dim, s_x=act_scale(inp))
        found.append((name, prev, fcs, s, alpha))
    for name, prev, fcs, s, _ in found:                       # all searched on the unscaled layer, then applied
        fold_scale(prev, fcs, s, head_dim)
    if clip:
        for (_, _, fcs, _, inp), (_, _, _, s, _) in zip(groups, found):
            for fc in fcs:
                if fc is not attn.q_proj and fc is not attn.k_proj:
                    fc.weight.copy_(clip_search(fc.weight, inp / s, bits, group_size))   # inputs after the fold
    if quantize:
        quantize_layer_rtn(layer, bits, group_size)
    return {name: alpha for name, _, _, _, alpha in found}


# --- the whole model ------------------------------------------------------------------------------------


def _decoder_layers(model: nn.Module):
    inner = getattr(model, "model", None)
    layers = getattr(inner, "layers", None)
    if layers is None:
        raise TypeError("expected a Llama-style causal LM with model.model.layers")
    return layers


@torch.no_grad()
def quantize_model_awq(model: nn.Module, calib: torch.Tensor, bits: int, group_size: int | None,
                       n_grid: int = 20, n_tokens: int | None = 512, clip: bool = False) -> list[dict]:
    """AWQ + RTN on every decoder layer, one layer at a time (`helpers.quant.evaluate.sequential`): each
    layer is searched on the inputs the already-quantized layers before it produce. calib: token ids
    (n_windows, seq). Returns [{group: α} per layer]. (The reference computes every layer's inputs with the
    float model instead; quantizing as we go lets later layers see — and compensate — earlier errors.)"""
    from .evaluate import sequential

    if not isinstance(calib, torch.Tensor) or calib.ndim != 2 or calib.is_floating_point():
        raise ValueError("calib must be an integer tensor of token ids (n_windows, seq)")
    _decoder_layers(model)
    weight_spec(bits, group_size)                              # bad bits / group_size fail before any work
    return sequential(model, calib, lambda i, layer, hidden, kw: awq_layer(layer, hidden.clone(), kw, bits,
                                                                          group_size, n_grid, n_tokens, clip=clip),
                      desc="AWQ")


# --- §3.1 Table 1: which 1% of channels to keep in full precision --------------------------------------


@torch.no_grad()
def salient_mask(w: torch.Tensor, x_mean: torch.Tensor, frac: float, by: str, generator=None) -> torch.Tensor:
    """Boolean (in,) mask of the ceil(frac · in) input channels to keep in full precision, chosen
    by "activation" (largest mean |x|), "weight" (largest column L2 norm ‖W[:, j]‖) or "random"."""
    n_in = w.shape[1]
    k = max(1, math.ceil(frac * n_in))
    if by == "activation":
        idx = x_mean.topk(k).indices
    elif by == "weight":
        idx = w.norm(dim=0).topk(k).indices
    elif by == "random":
        idx = torch.randperm(n_in, generator=generator)[:k]
    else:
        raise ValueError(f"by must be 'activation', 'weight' or 'random', got {by!r}")
    mask = torch.zeros(n_in, dtype=torch.bool)
    mask[idx] = True
    return mask


@torch.no_grad()
def protect_salient(model: nn.Module, x_means: dict[str, torch.Tensor], bits: int, group_size: int | None,
                    frac: float = 0.01, by: str = "activation", seed: int = 0) -> nn.Module:
    """RTN-quantize every decoder-layer linear but keep the salient input columns' float weights, in place.
    x_means: {linear name: mean |x| per input channel} (`helpers.quant.smoothquant.activation_stats(..., "mean")`)."""
    g = torch.Generator().manual_seed(seed)
    for name, m in model.named_modules():
        if isinstance(m, nn.Linear) and ".layers." in f".{name}":
            if name not in x_means:
                raise KeyError(f"no activation statistics for {name}")
            keep = salient_mask(m.weight, x_means[name], frac, by, g)
            w_hat = rtn(m.weight, bits, group_size)
            m.weight.copy_(torch.where(keep.view(1, -1), m.weight, w_hat))
    return model


def salient_channel_experiment(load, calib: torch.Tensor, test_windows: torch.Tensor, bits: int = 3,
                               group_size: int | None = 64, frac: float = 0.01, seed: int = 0) -> dict[str, float]:
    """AWQ Table 1 on our LLM: WikiText-2 perplexity of float, RTN, and RTN with `frac` of the input channels of
    every decoder linear kept in float, chosen by activation magnitude / weight magnitude / at random.
    load: () → a fresh float model (each variant modifies its own copy); calib, test_windows: token ids (n, T)."""
    from .evaluate import perplexity
    from .smoothquant import activation_stats

    model = load()
    x_means = activation_stats(model, calib, stat="mean")
    out = {"float": perplexity(model, test_windows).ppl}
    out["rtn"] = perplexity(quantize_model_rtn(load(), bits, group_size), test_windows).ppl
    for by in ("activation", "weight", "random"):
        out[by] = perplexity(protect_salient(load(), x_means, bits, group_size, frac, by, seed), test_windows).ppl
    return out
