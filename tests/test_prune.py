"""Pruning (helpers/compress/prune.py): masks bit-equal with torch.nn.utils.prune, structured pruning exact."""
import copy

import pytest
import torch
import torch.nn.utils.prune as tprune
from torch import nn

from helpers.compress.prune import (apply_masks, channel_scores, head_scores, iterative_schedule, magnitude_masks,
                                    masked_optimizer, neuron_scores, prune_channels, prune_heads,
                                    prune_lenet_channels, prune_linear_weights, prune_mlp_neurons, random_reinit,
                                    rewind, semi_structured_mask, snapshot, sparsity, top_indices)
from helpers.models.lenet import LeNet5
from helpers.seq.transformer import MultiHeadAttention


def mlp(sizes=(784, 300, 100, 10), seed=0):
    torch.manual_seed(seed)
    layers = [nn.Flatten()]
    for a, b in zip(sizes, sizes[1:]):
        layers += [nn.Linear(a, b), nn.ReLU()]
    return nn.Sequential(*layers[:-1])


def distinct_weights(model, seed=0):
    """Give every Linear weight distinct magnitudes (no ties anywhere), so the mask is unique by construction."""
    g = torch.Generator().manual_seed(seed)
    lin = [m for m in model.modules() if isinstance(m, nn.Linear)]
    n = sum(m.weight.numel() for m in lin)
    mags = (torch.randperm(n, generator=g).double() + 1) / n  # a permutation of 1/n, 2/n, ..., 1: all distinct
    signs = torch.randint(0, 2, (n,), generator=g) * 2 - 1
    i = 0
    with torch.no_grad():
        for m in lin:
            k = m.weight.numel()
            m.weight.copy_((mags[i:i + k] * signs[i:i + k] * 0.1).view_as(m.weight).float())
            i += k
    return model


@pytest.mark.parametrize("s", [0.0, 0.1, 0.5, 0.9, 0.97, 0.999])
def test_layer_masks_equal_torch_l1_unstructured(s):
    model = distinct_weights(mlp())
    masks = magnitude_masks({n: m.weight for n, m in model.named_modules() if isinstance(m, nn.Linear)}, s, "layer")
    for name, m in model.named_modules():
        if isinstance(m, nn.Linear):
            ref = tprune.l1_unstructured(nn.Linear(m.in_features, m.out_features).requires_grad_(False),
                                         "weight", amount=s, importance_scores=m.weight.detach())
            assert torch.equal(masks[name], ref.weight_mask.bool()), name


@pytest.mark.parametrize("s", [0.0, 0.3, 0.8, 0.95, 0.99])
def test_global_masks_equal_torch_global_unstructured(s):
    model = distinct_weights(mlp(), seed=1)
    ref = distinct_weights(mlp(), seed=1)
    masks = prune_linear_weights(model, s, scope="global")
    params = [(m, "weight") for m in ref.modules() if isinstance(m, nn.Linear)]
    tprune.global_unstructured(params, pruning_method=tprune.L1Unstructured, amount=s)
    ref_masks = {n: m.weight_mask.bool() for n, m in ref.named_modules() if isinstance(m, nn.Linear)}
    assert masks.keys() == ref_masks.keys()
    for name in masks:
        assert torch.equal(masks[name], ref_masks[name]), name
    # and the pruned weights themselves are the same tensors
    for (n, a), b in zip(((n, m) for n, m in model.named_modules() if isinstance(m, nn.Linear)),
                         (m for m in ref.modules() if isinstance(m, nn.Linear))):
        assert torch.equal(a.weight, b.weight), n


def test_global_differs_from_layer_when_scales_differ():
    """Global ranking prunes the layer of small weights harder; per layer prunes each by the same fraction."""
    w = {"a": torch.linspace(0.01, 1, 100), "b": torch.linspace(10, 20, 100)}
    g = magnitude_masks(w, 0.5, "global")
    lay = magnitude_masks(w, 0.5, "layer")
    assert int((~g["a"]).sum()) == 100 and int((~g["b"]).sum()) == 0
    assert int((~lay["a"]).sum()) == 50 and int((~lay["b"]).sum()) == 50


def test_ties_lower_index_first():
    w = {"w": torch.tensor([1.0, -1.0, 1.0, 2.0, -1.0])}
    assert magnitude_masks(w, 0.4)["w"].tolist() == [False, False, True, True, True]


def test_sparsity_accounting_exact():
    model = mlp()
    n = 784 * 300 + 300 * 100 + 100 * 10
    for s in (0.0, 0.5, 0.9, 0.95):
        m = mlp()
        masks = prune_linear_weights(m, s, "global")
        assert sparsity(masks) == round(s * n) / n
        assert sparsity(m) == round(s * n) / n  # the weights are zero exactly where the masks say
    masks = prune_linear_weights(model, 0.9, "layer")
    expected = sum(round(0.9 * k) for k in (784 * 300, 300 * 100, 100 * 10)) / n
    assert sparsity(masks) == expected and sparsity(model) == expected
    skip = prune_linear_weights(mlp(), 0.5, skip=lambda name: name == "5")
    assert set(skip) == {"1", "3"}


@pytest.mark.parametrize("bad", [-0.1, 1.0, 1.5, float("nan")])
def test_sparsity_out_of_range(bad):
    with pytest.raises(ValueError, match=r"\[0, 1\)"):
        magnitude_masks({"w": torch.randn(3, 3)}, bad)
    with pytest.raises(ValueError):
        prune_linear_weights(mlp(), bad)
    with pytest.raises(ValueError):
        iterative_schedule(bad, 3)


def test_other_bad_inputs():
    with pytest.raises(TypeError):
        magnitude_masks({"w": torch.randn(3)}, "0.5")
    with pytest.raises(ValueError, match="scope"):
        magnitude_masks({"w": torch.randn(3)}, 0.5, scope="row")
    with pytest.raises(ValueError):
        magnitude_masks({}, 0.5)
    with pytest.raises(ValueError, match="shape"):
        apply_masks(mlp(), {"1": torch.ones(3, 3, dtype=torch.bool)})
    with pytest.raises(ValueError):
        prune_linear_weights(nn.Sequential(nn.ReLU()), 0.5)
    with pytest.raises(ValueError):
        iterative_schedule(0.9, 0)
    with pytest.raises(TypeError):
        prune_heads(nn.Linear(4, 4), [0])


def test_iterative_schedule_closed_forms():
    geo = iterative_schedule(0.9, 4)
    assert geo[-1] == 0.9 and all(a < b for a, b in zip(geo, geo[1:]))
    remaining = [1 - s for s in [0.0] + geo]  # each round keeps the same fraction (1 - 0.9)^(1/4) of what is left
    ratios = [b / a for a, b in zip(remaining, remaining[1:])]
    assert max(abs(r - 0.1 ** 0.25) for r in ratios) < 1e-12
    cub = iterative_schedule(0.8, 5, "cubic")
    assert cub == pytest.approx([0.8 * (1 - (1 - t / 5) ** 3) for t in range(1, 6)], abs=1e-15)
    assert iterative_schedule(0.5, 1) == [0.5]


def zero_units(model, keeps):
    """The masked big model: hidden units not in `keeps[i]` get their row, bias and outgoing column zeroed."""
    lin = [m for m in model if isinstance(m, nn.Linear)]
    with torch.no_grad():
        for a, b, keep in zip(lin, lin[1:], keeps):
            drop = torch.ones(a.out_features, dtype=torch.bool)
            drop[keep] = False
            a.weight[drop] = 0
            a.bias[drop] = 0
            b.weight[:, drop] = 0
    return model


def test_structured_neurons_same_function_as_masked():
    big = mlp()
    small = prune_mlp_neurons(big, 0.7, p=2)
    assert [tuple(m.weight.shape) for m in small if isinstance(m, nn.Linear)] == [(90, 784), (30, 90), (10, 30)]
    lin = [m for m in big if isinstance(m, nn.Linear)]
    keeps = [top_indices(neuron_scores(lin[0]), 90), top_indices(neuron_scores(lin[1]), 30)]
    masked = zero_units(copy.deepcopy(big), keeps)
    x = torch.randn(64, 1, 28, 28)
    assert (small(x) - masked(x)).abs().max() <= 1e-6
    assert (small(x) - big(x)).abs().max() > 1e-3  # the pruning did change the function
    # by L2 norm of the row: the kept units are exactly the largest rows (closed form on a tiny layer)
    fc, out = nn.Linear(3, 4), nn.Linear(4, 2)
    with torch.no_grad():
        fc.weight.copy_(torch.tensor([[3.0, 0, 0], [0, 1, 0], [1, 1, 1], [0, 0, 2]]))  # norms 3, 1, √3, 2
    small = prune_mlp_neurons(nn.Sequential(fc, nn.ReLU(), out), 0.5)
    assert torch.equal(small[0].weight, fc.weight[[0, 3]]) and torch.equal(small[2].weight, out.weight[:, [0, 3]])


def test_structured_neurons_rejects_layernorm_between():
    with pytest.raises(TypeError, match="elementwise"):
        prune_mlp_neurons(nn.Sequential(nn.Linear(4, 8), nn.LayerNorm(8), nn.Linear(8, 2)), 0.5)


def test_conv_channels_lenet_same_function_as_masked():
    torch.manual_seed(0)
    big = LeNet5(in_channels=1)
    small = prune_lenet_channels(big, 0.5)
    f, c = small.features, small.classifier
    assert f[0].weight.shape == (3, 1, 5, 5) and f[3].weight.shape == (8, 3, 5, 5) and c[1].weight.shape == (120, 200)
    # the masked big model: zero the dropped filters (+ bias) and every input that reads them
    masked = copy.deepcopy(big)
    mf, mc = masked.features, masked.classifier
    d1, d2 = torch.ones(6, dtype=torch.bool), torch.ones(16, dtype=torch.bool)
    d1[top_indices(channel_scores(big.features[0]), 3)] = False
    d2[top_indices(channel_scores(big.features[3]), 8)] = False
    with torch.no_grad():
        mf[0].weight[d1] = 0
        mf[0].bias[d1] = 0
        mf[3].weight[:, d1] = 0
        mf[3].weight[d2] = 0
        mf[3].bias[d2] = 0
        mc[1].weight.view(120, 16, 25)[:, d2] = 0  # the flatten: channel c owns inputs 25c … 25c + 24
    x = torch.randn(16, 1, 28, 28)
    assert (small(x) - masked(x)).abs().max() <= 1e-6
    assert (small(x) - big(x)).abs().max() > 1e-3


def test_prune_channels_errors():
    conv = nn.Conv2d(3, 4, 3)
    with pytest.raises(ValueError, match="spatial"):
        prune_channels(conv, nn.Linear(4 * 9, 5), torch.tensor([0, 1]), spatial=4)
    with pytest.raises(TypeError):
        prune_channels(conv, nn.ReLU(), torch.tensor([0]))


def test_heads_same_function_as_masked():
    torch.manual_seed(0)
    attn = MultiHeadAttention(d_model=32, n_head=4).eval()
    small = prune_heads(attn, [2, 0])
    assert small.q_proj.weight.shape == (16, 32) and small.out_proj.weight.shape == (32, 16) and small.n_head == 2
    masked = copy.deepcopy(attn)
    with torch.no_grad():  # a head whose out_proj columns are zero contributes nothing
        for h in (1, 3):
            masked.out_proj.weight[:, h * 8:(h + 1) * 8] = 0
    x = torch.randn(3, 7, 32)
    ys, _ = small(x, is_causal=True)
    ym, _ = masked(x, is_causal=True)
    assert (ys - ym).abs().max() <= 1e-6
    assert (ys - attn(x, is_causal=True)[0]).abs().max() > 1e-3
    hs = head_scores(attn)
    w = torch.cat([attn.q_proj.weight[8:16].flatten(), attn.k_proj.weight[8:16].flatten(),
                   attn.v_proj.weight[8:16].flatten(), attn.out_proj.weight[:, 8:16].flatten()])
    assert torch.allclose(hs[1], w.norm(), rtol=1e-6)
    with pytest.raises(ValueError):
        prune_heads(attn, [0, 4])


def test_lottery_steps():
    model = mlp((20, 16, 3))
    init = snapshot(model)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(1.0)  # "training"
    masks = prune_linear_weights(model, 0.5, "layer")
    rewind(model, init, masks)
    for name, m in model.named_modules():
        if name in masks:
            assert torch.equal(m.weight, init[f"{name}.weight"] * masks[name])
    random_reinit(model, masks, seed=3)
    assert sparsity(model) == sparsity(masks)
    assert not torch.equal(model[1].weight, init["1.weight"] * masks["1"])
    opt = masked_optimizer(lambda p: torch.optim.SGD(p, lr=0.1), model, masks)(model.parameters())
    loss = model(torch.randn(8, 20)).pow(2).sum()
    loss.backward()
    opt.step()
    assert sparsity(model) >= sparsity(masks)  # pruned weights stay zero after the step
    assert all(bool((m.weight[~masks[n]] == 0).all()) for n, m in model.named_modules() if n in masks)


def test_semi_structured_2_4():
    torch.manual_seed(0)
    w = torch.randn(8, 16)
    keep = semi_structured_mask(w)
    g, k = w.abs().view(-1, 4), keep.view(-1, 4)
    assert bool((k.sum(1) == 2).all())  # exactly 2 of every 4
    kept_min = torch.where(k, g, torch.inf).amin(1)
    dropped_max = torch.where(~k, g, -torch.inf).amax(1)
    assert bool((kept_min >= dropped_max).all())  # the two largest of each group
    assert semi_structured_mask(torch.tensor([[1.0, 1.0, 1.0, 1.0]])).tolist() == [[True, True, False, False]]
    with pytest.raises(ValueError):
        semi_structured_mask(torch.randn(3, 6))
