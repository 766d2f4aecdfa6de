"""Magnitude pruning from scratch: which weights can go, and how to make the model really smaller.

Unstructured pruning (Han et al. 2015, "Learning both Weights and Connections") sets individual weights to
zero: the ones with the smallest |w|, the simplest saliency there is. A *mask* (True = keep) per tensor says
which survive. Two ways to pick them at sparsity s (the fraction of weights removed):

    global   one threshold over all tensors together: layers with many small weights lose more
    layer    the same fraction s of every tensor

k = round(s · n) weights go (the count `torch.nn.utils.prune` uses; the tests check the masks are the same).
A zero stored in a dense matrix still costs memory and a multiply: the matrix is as big and as slow as
before. Structured pruning removes whole rows and columns instead, so the matrices become physically smaller:

    MLP neurons      row i of W1 (and b1[i]) + column i of W2     (unit i's fan-in and fan-out)
    conv channels    filter c of one conv + input channel c of the next conv, or the c-th block of
                     H·W inputs of the Linear after a flatten (Li et al. 2017, "Pruning Filters for Efficient
                     ConvNets")
    attention heads  head h's rows of W_q, W_k, W_v + its columns of W_out (Michel et al. 2019,
                     "Are Sixteen Heads Really Better than One?")

In between sits N:M semi-structured sparsity: n of every m consecutive weights kept (2:4 on NVIDIA's sparse
tensor cores, Mishra et al. 2021), a pattern regular enough for hardware to skip the zeros.

Pruning at once (one-shot) hurts more than pruning a little, fine-tuning, and repeating (iterative):
`iterative_schedule` gives the sparsity after each round — geometric (every round removes the same fraction of
what is left, Han et al. 2015; Frankle & Carbin 2019) or cubic (Zhu & Gupta 2017, "To prune, or not to prune").

The lottery ticket hypothesis (Frankle & Carbin 2019): train, prune by magnitude, *rewind* the survivors to
their initial values θ0 and retrain the sparse network; it trains as well as the dense one, while the same mask
with a fresh random init does not. `snapshot`, `rewind`, `random_reinit` and `masked_optimizer` are its steps.
"""
from __future__ import annotations

import copy
from numbers import Real
from typing import Callable

import torch
from torch import nn

# ---- unstructured: masks by magnitude ----------------------------------------------------------------------


def _check_sparsity(sparsity) -> float:
    if isinstance(sparsity, bool) or not isinstance(sparsity, Real):
        raise TypeError(f"sparsity must be a number in [0, 1), got {type(sparsity).__name__}")
    if not 0.0 <= sparsity < 1.0:
        raise ValueError(f"sparsity must be in [0, 1) (the fraction of weights removed), got {sparsity!r}")
    return float(sparsity)


def _smallest(scores: torch.Tensor, k: int) -> torch.Tensor:
    """Bool mask over a flat `scores`: False at the k smallest (ties: the lower index goes first)."""
    keep = torch.ones(scores.numel(), dtype=torch.bool, device=scores.device)
    keep[torch.argsort(scores, stable=True)[:k]] = False
    return keep


def magnitude_masks(weights: dict[str, torch.Tensor], sparsity: float,
                    scope: str = "global") -> dict[str, torch.Tensor]:
    """Bool masks (True = keep) that remove the round(sparsity · n) smallest |w|.

    scope "global": one ranking over all tensors (n = all their weights); "layer": each tensor on its own.
    """
    s = _check_sparsity(sparsity)
    if scope not in ("global", "layer"):
        raise ValueError(f"scope must be 'global' or 'layer', got {scope!r}")
    if not weights:
        raise ValueError("magnitude_masks: no weights given")
    if scope == "layer":
        return {name: _smallest(w.detach().abs().flatten(), round(s * w.numel())).view_as(w)
                for name, w in weights.items()}
    flat = torch.cat([w.detach().abs().flatten().float() for w in weights.values()])  # (n_total,)
    keep = _smallest(flat, round(s * flat.numel()))
    masks, i = {}, 0
    for name, w in weights.items():  # cut the global mask back into per-tensor pieces
        masks[name] = keep[i:i + w.numel()].view_as(w)
        i += w.numel()
    return masks


def linear_weights(model: nn.Module, skip: Callable[[str], bool] | None = None) -> dict[str, torch.Tensor]:
    """{module name: weight} of every nn.Linear in `model` (names as in `model.named_modules()`)."""
    return {name: m.weight for name, m in model.named_modules()
            if isinstance(m, nn.Linear) and not (skip and skip(name))}


@torch.no_grad()
def apply_masks(model: nn.Module, masks: dict[str, torch.Tensor]) -> nn.Module:
    """Zero the pruned weights again (after every optimizer step while fine-tuning a pruned model)."""
    modules = dict(model.named_modules())
    for name, mask in masks.items():
        if name not in modules:
            raise KeyError(f"mask {name!r} names no module of the model")
        w = modules[name].weight
        if mask.shape != w.shape:
            raise ValueError(f"mask {name!r} has shape {tuple(mask.shape)}, the weight {tuple(w.shape)}")
        w.mul_(mask.to(w.device, w.dtype))
    return model


def prune_linear_weights(model: nn.Module, sparsity: float, scope: str = "global",
                         skip: Callable[[str], bool] | None = None) -> dict[str, torch.Tensor]:
    """Magnitude-prune every nn.Linear weight of `model` in place (unless `skip(name)`); returns the masks."""
    weights = linear_weights(model, skip)
    if not weights:
        raise ValueError("prune_linear_weights: the model has no nn.Linear to prune (or `skip` skipped them all)")
    masks = magnitude_masks(weights, sparsity, scope)
    apply_masks(model, masks)
    return masks


def sparsity(model_or_masks) -> float:
    """Fraction of zeros: over the masks given, or over all nn.Linear weights of a model."""
    if isinstance(model_or_masks, nn.Module):
        tensors = list(linear_weights(model_or_masks).values())
    elif isinstance(model_or_masks, dict):
        tensors = list(model_or_masks.values())
    else:
        raise TypeError(f"sparsity() takes a model or a dict of masks, got {type(model_or_masks).__name__}")
    n = sum(t.numel() for t in tensors)
    if n == 0:
        raise ValueError("sparsity(): no weights to count")
    return sum(int((t == 0).sum()) for t in tensors) / n


# ---- one-shot vs iterative --------------------------------------------------------------------------------


def iterative_schedule(final: float, steps: int, kind: str = "geometric") -> list[float]:
    """The cumulative sparsity after each of `steps` prune rounds, ending exactly at `final`.

    geometric: s_i = 1 - (1 - final)^(i / steps) — every round removes the same fraction of what is left;
    cubic:     s_i = final · (1 - (1 - i / steps)^3) — Zhu & Gupta: fast at first, gently at the end.
    """
    final = _check_sparsity(final)
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
        raise ValueError(f"steps must be an int >= 1, got {steps!r}")
    if kind == "geometric":
        s = [1 - (1 - final) ** (i / steps) for i in range(1, steps + 1)]
    elif kind == "cubic":
        s = [final * (1 - (1 - i / steps) ** 3) for i in range(1, steps + 1)]
    else:
        raise ValueError(f"kind must be 'geometric' or 'cubic', got {kind!r}")
    s[-1] = final
    return s


# ---- structured: physically smaller matrices ---------------------------------------------------------------


def semi_structured_mask(w: torch.Tensor, n: int = 2, m: int = 4) -> torch.Tensor:
    """N:M sparsity (2:4 in NVIDIA's sparse tensor cores, Ampere and later): in every group of m consecutive
    weights along the last dim, keep the n largest |w| (ties: the lower index). Exactly 1 - n/m sparse."""
    if not 1 <= n < m or w.shape[-1] % m:
        raise ValueError(f"need 1 <= n < m and the last dim ({w.shape[-1]}) divisible by m={m}; got n={n}")
    groups = w.detach().abs().reshape(-1, m)                                  # (n_groups, m)
    top = torch.argsort(groups, dim=1, descending=True, stable=True)[:, :n]   # (n_groups, n)
    keep = torch.zeros_like(groups, dtype=torch.bool).scatter_(1, top, True)
    return keep.view_as(w)


def top_indices(scores: torch.Tensor, n_keep: int) -> torch.Tensor:
    """Indices of the n_keep largest scores, in increasing index order (ties: the lower index wins)."""
    if not 1 <= n_keep <= scores.numel():
        raise ValueError(f"n_keep must be in [1, {scores.numel()}], got {n_keep}")
    order = torch.argsort(-scores, stable=True)[:n_keep]
    return order.sort().values


@torch.no_grad()
def _take(layer: nn.Module, idx: torch.Tensor, dim: int) -> nn.Module:
    """A copy of a Linear/Conv2d keeping only `idx` along weight dim 0 (outputs, with the bias) or 1 (inputs)."""
    new = copy.deepcopy(layer)
    new.weight = nn.Parameter(layer.weight.index_select(dim, idx).clone())
    if dim == 0 and layer.bias is not None:
        new.bias = nn.Parameter(layer.bias[idx].clone())
    n = len(idx)
    if isinstance(layer, nn.Linear):
        if dim == 0:
            new.out_features = n
        else:
            new.in_features = n
    elif dim == 0:
        new.out_channels = n
    else:
        new.in_channels = n
    return new


def neuron_scores(layer: nn.Linear, p: float = 2) -> torch.Tensor:
    """(out,) the L_p norm of each unit's fan-in row of W (its bias left out)."""
    return layer.weight.detach().norm(p=p, dim=1)


def prune_neurons(fc_in: nn.Linear, fc_out: nn.Linear, keep: torch.Tensor) -> tuple[nn.Linear, nn.Linear]:
    """Keep only hidden units `keep`: rows of fc_in (W1, b1), the same columns of fc_out (W2). New layers."""
    if fc_in.out_features != fc_out.in_features:
        raise ValueError(f"fc_in has {fc_in.out_features} outputs but fc_out {fc_out.in_features} inputs")
    return _take(fc_in, keep, 0), _take(fc_out, keep, 1)


_ELEMENTWISE = (nn.ReLU, nn.GELU, nn.Tanh, nn.Sigmoid, nn.LeakyReLU, nn.Dropout, nn.Identity)


def prune_mlp_neurons(model: nn.Sequential, fraction: float, p: float = 2) -> nn.Sequential:
    """A smaller copy of an MLP: every hidden layer loses round(fraction · width) units of least L_p norm.

    Exact: the small model computes what the big one computes with those units' rows, biases and outgoing
    columns zeroed. That needs unit i's activation to depend on its own pre-activation only, so between two
    Linear layers only elementwise modules (ReLU, GELU, Dropout, …) may sit — not a LayerNorm, which mixes units.
    """
    fraction = _check_sparsity(fraction)
    if not isinstance(model, nn.Sequential):
        raise TypeError(f"prune_mlp_neurons takes an nn.Sequential MLP, got {type(model).__name__}")
    new = copy.deepcopy(model)
    lin = [i for i, m in enumerate(new) if isinstance(m, nn.Linear)]
    for a, b in zip(lin, lin[1:]):
        between = list(new)[a + 1:b]
        if not all(isinstance(m, _ELEMENTWISE) for m in between):
            raise TypeError(f"layers {a}..{b}: only elementwise activations may sit between two Linear layers, "
                            f"got {[type(m).__name__ for m in between]}")
    # score every hidden layer on the original weights first, then cut
    keeps = [top_indices(neuron_scores(new[a], p), new[a].out_features - round(fraction * new[a].out_features))
             for a in lin[:-1]]
    for a, b, keep in zip(lin, lin[1:], keeps):
        new[a], new[b] = prune_neurons(new[a], new[b], keep)
    return new


def channel_scores(conv: nn.Conv2d, p: float = 1) -> torch.Tensor:
    """(out_channels,) the L_p norm of each filter (Li et al. 2017 rank filters by their L1 norm)."""
    return conv.weight.detach().flatten(1).norm(p=p, dim=1)


def prune_channels(conv: nn.Conv2d, nxt: nn.Module, keep: torch.Tensor,
                   spatial: int = 1) -> tuple[nn.Module, nn.Module]:
    """Keep only output channels `keep` of `conv` and the matching inputs of `nxt`. New layers.

    nxt: the next Conv2d (input channels `keep`) or the Linear after a flatten of (C, H, W) maps, whose
    inputs come in blocks of `spatial` = H·W per channel: inputs c·spatial … c·spatial + spatial - 1.
    """
    if not isinstance(conv, nn.Conv2d) or conv.groups != 1:
        raise TypeError("prune_channels needs an nn.Conv2d with groups=1")
    if isinstance(nxt, nn.Conv2d):
        if nxt.in_channels != conv.out_channels or nxt.groups != 1:
            raise ValueError(f"next conv takes {nxt.in_channels} channels, conv makes {conv.out_channels}")
        return _take(conv, keep, 0), _take(nxt, keep, 1)
    if isinstance(nxt, nn.Linear):
        if nxt.in_features != conv.out_channels * spatial:
            raise ValueError(f"Linear takes {nxt.in_features} inputs, not {conv.out_channels} channels x "
                             f"spatial={spatial}: pass spatial = H·W of the flattened maps")
        cols = (keep[:, None] * spatial + torch.arange(spatial)).flatten()  # (len(keep) · spatial,)
        return _take(conv, keep, 0), _take(nxt, cols, 1)
    raise TypeError(f"the layer after a conv must be Conv2d or Linear, got {type(nxt).__name__}")


def prune_lenet_channels(model: nn.Module, fraction: float, p: float = 1) -> nn.Module:
    """A smaller copy of a `helpers.models.lenet.LeNet5`: both convs lose round(fraction · C) filters by L_p norm."""
    fraction = _check_sparsity(fraction)
    new = copy.deepcopy(model)
    f, c = new.features, new.classifier
    if not (isinstance(f[0], nn.Conv2d) and isinstance(f[3], nn.Conv2d) and isinstance(c[1], nn.Linear)):
        raise TypeError("prune_lenet_channels expects helpers.models.lenet.LeNet5's layout")

    keep1, keep2 = (top_indices(channel_scores(conv, p), conv.out_channels - round(fraction * conv.out_channels))
                    for conv in (f[0], f[3]))  # both scored on the original filters, then cut
    f[0], f[3] = prune_channels(f[0], f[3], keep1)  # conv1's filters = conv2's input channels
    spatial = c[1].in_features // f[3].out_channels  # H·W = 5·5 of conv2's maps at the flatten
    f[3], c[1] = prune_channels(f[3], c[1], keep2, spatial)
    return new


def head_scores(attn: nn.Module, p: float = 2) -> torch.Tensor:
    """(n_head,) the L_p norm of each head's weights: its rows of W_q, W_k, W_v and its columns of W_out."""
    _check_attention(attn)
    nh, hs = attn.n_head, attn.q_proj.out_features // attn.n_head
    rows = [getattr(attn, n).weight.detach().view(nh, hs, -1).flatten(1) for n in ("q_proj", "k_proj", "v_proj")]
    cols = attn.out_proj.weight.detach().view(-1, nh, hs).transpose(0, 1).flatten(1)  # (nh, C · hs)
    return torch.cat(rows + [cols], dim=1).norm(p=p, dim=1)


def _check_attention(attn):
    if not all(hasattr(attn, n) for n in ("q_proj", "k_proj", "v_proj", "out_proj", "n_head")):
        raise TypeError(f"{type(attn).__name__} is not a multi-head attention with separate q/k/v/out projections "
                        "(helpers.seq.transformer.MultiHeadAttention); GPT's fused c_attn: convert the block with "
                        "helpers.seq.transformer.encoder_block_from_gpt first")


def prune_heads(attn: nn.Module, keep) -> nn.Module:
    """A copy of a multi-head attention with only heads `keep`: their rows of q/k/v, their columns of out."""
    _check_attention(attn)
    nh, hs = attn.n_head, attn.q_proj.out_features // attn.n_head
    keep = torch.as_tensor(keep, dtype=torch.long).sort().values
    if keep.numel() == 0 or keep.unique().numel() != keep.numel() or int(keep.min()) < 0 or int(keep.max()) >= nh:
        raise ValueError(f"keep must be distinct head indices in [0, {nh}), at least one; got {keep.tolist()}")
    idx = (keep[:, None] * hs + torch.arange(hs)).flatten()  # (len(keep) · hs,) the features of the kept heads
    new = copy.deepcopy(attn)
    for name in ("q_proj", "k_proj", "v_proj"):
        setattr(new, name, _take(getattr(attn, name), idx, 0))
    new.out_proj = _take(attn.out_proj, idx, 1)
    new.n_head = keep.numel()
    return new


# ---- the lottery ticket (Frankle & Carbin 2019) ------------------------------------------------------------


def snapshot(model: nn.Module) -> dict[str, torch.Tensor]:
    """A copy of every parameter and buffer now: θ0 before training, for the rewind."""
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


@torch.no_grad()
def rewind(model: nn.Module, init_state: dict[str, torch.Tensor], masks: dict[str, torch.Tensor]) -> nn.Module:
    """The winning ticket: the survivors go back to their initial values θ0, the pruned ones stay zero."""
    model.load_state_dict(init_state)
    return apply_masks(model, masks)


@torch.no_grad()
def random_reinit(model: nn.Module, masks: dict[str, torch.Tensor], seed: int) -> nn.Module:
    """The control: the same mask on a fresh random init (every layer's own `reset_parameters`, seeded)."""
    torch.manual_seed(seed)
    for m in model.modules():
        if hasattr(m, "reset_parameters"):
            m.reset_parameters()
    return apply_masks(model, masks)


def masked_optimizer(optimizer: Callable, model: nn.Module, masks: dict[str, torch.Tensor]) -> Callable:
    """Wrap an optimizer factory (`params -> Optimizer`, as `helpers.train.fit` takes) so that every step
    re-applies the masks: a pruned weight stays zero while the others train."""
    def factory(params):
        opt = optimizer(params)
        opt.register_step_post_hook(lambda *_: apply_masks(model, masks))
        return opt
    return factory
