"""helpers.quant.awq: scaling is exact in float, the search contains RTN (α = 0) and beats it where a few input
channels carry large activations, the GQA-tied v → o fold is exact, and bad input is refused."""
import copy

import pytest
import torch
from torch import nn
from transformers import LlamaConfig, LlamaForCausalLM

from helpers.quant.awq import (act_scale, awq_layer, clip_search, fold_scale, quantize_layer_rtn, quantize_model_awq,
                               quantize_model_rtn, rtn, salient_mask, search_scale)
from helpers.quant.affine import QSpec
from helpers.quant.evaluate import layer_kwargs


def tiny_llama(seed=0):
    torch.manual_seed(seed)
    cfg = LlamaConfig(vocab_size=64, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, head_dim=16)   # GQA: n_rep = 2
    m = LlamaForCausalLM(cfg).eval()
    with torch.no_grad():
        for layer in m.model.layers:   # non-trivial norm weights, so folding into them is visible
            layer.input_layernorm.weight.uniform_(0.5, 1.5)
            layer.post_attention_layernorm.weight.uniform_(0.5, 1.5)
    return m


def outlier_inputs(n=8, seq=16, d=64, seed=1):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, seq, d, generator=g)
    x[..., :3] *= 30.0                           # a few channels with large activations on every token
    return x


def test_rtn_matches_affine_asymmetric_per_group_and_channel():
    w = torch.randn(8, 32)
    g = rtn(w, 3, 16)
    # direct: each row's groups of 16 on a 3-bit asymmetric grid spanning [min, max] (both signs present)
    for r in range(8):
        for k in range(2):
            blk = w[r, 16 * k:16 * (k + 1)]
            lo, hi = float(blk.min()), float(blk.max())
            s = (hi - lo) / 7
            z = round(-lo / s)
            ref = (torch.clamp(torch.round(blk / s) + z, 0, 7) - z) * s
            assert torch.allclose(g[r, 16 * k:16 * (k + 1)], ref, atol=1e-6)
    c = rtn(w, 4, None)
    assert torch.equal(c, QSpec(bits=4, granularity="channel", axis=0).calibrate(w).fake_quantize(w))
    # the same baseline as GPTQ's RTN (unsigned codes there, signed here: the same asymmetric grid)
    from helpers.quant.gptq import rtn_quantize
    assert torch.equal(g, rtn_quantize(w, QSpec(bits=3, signed=False, granularity="group", group_size=16, axis=1)))


def test_fold_scale_keeps_float_layer_output():
    model = tiny_llama()
    layer = model.model.layers[0]
    x = outlier_inputs()
    kw = layer_kwargs(model, x.shape[1])
    with torch.no_grad():
        ref = layer(x, **kw)
        scaled = copy.deepcopy(layer)
        alphas = awq_layer(scaled, x, kw, bits=3, group_size=16, quantize=False)
        out = scaled(x, **kw)
    assert set(alphas) == {"qkv", "o", "gate_up", "down"}
    assert any(a > 0 for a in alphas.values())       # some scale ≠ 1 was folded in
    assert float((out - ref).abs().max() / ref.abs().max()) <= 1e-4
    w0, w1 = layer.input_layernorm.weight, scaled.input_layernorm.weight
    assert not torch.allclose(w0, w1) or not torch.allclose(layer.mlp.up_proj.weight, scaled.mlp.up_proj.weight)


def test_gqa_tied_fold_into_v_proj_is_exact():
    model = tiny_llama()
    attn = model.model.layers[0].self_attn
    x = torch.randn(2, 8, 64)
    kw = layer_kwargs(model, x.shape[1])
    s = torch.rand(2, 1, 16).expand(2, 2, 16).reshape(-1) + 0.5      # tied over the 2 query heads per KV head
    with torch.no_grad():
        ref = attn(x, position_embeddings=kw["position_embeddings"])[0]
        fold_scale(attn.v_proj, [attn.o_proj], s, head_dim=16)
        out = attn(x, position_embeddings=kw["position_embeddings"])[0]
    assert torch.allclose(out, ref, rtol=1e-4, atol=1e-5)
    with pytest.raises(ValueError, match="query heads"):
        fold_scale(attn.v_proj, [attn.o_proj], torch.rand(64) + 0.5, head_dim=16)   # untied: not foldable


def test_search_alpha_zero_is_rtn_and_awq_beats_rtn_on_outlier_channels():
    torch.manual_seed(0)
    fc = nn.Linear(64, 32, bias=False)
    x = outlier_inputs(n=4, seq=64)
    held_out = outlier_inputs(n=4, seq=64, seed=2)
    with torch.no_grad():
        y = fc(x)
        s, alpha, losses = search_scale(fc, [fc], x, bits=3, group_size=16)
        rtn_loss = float((x @ rtn(fc.weight, 3, 16).T - y).double().pow(2).mean())
        assert losses[0] == pytest.approx(rtn_loss, rel=1e-6)      # α = 0: s ≡ 1, plain RTN
        assert len(losses) == 20 and alpha > 0 and min(losses) < 0.7 * rtn_loss
        w = fc.weight.clone()
        awq_w = rtn(w * s, 3, 16) / s                               # what AWQ deploys (1/s folded upstream)
        err_awq = float((held_out @ awq_w.T - held_out @ w.T).pow(2).mean())
        err_rtn = float((held_out @ rtn(w, 3, 16).T - held_out @ w.T).pow(2).mean())
    assert err_awq < 0.7 * err_rtn
    assert torch.equal(fc.weight, w)                                # the search restored the weights


def test_awq_layer_beats_rtn_on_quantized_layer_output():
    model = tiny_llama()
    layer = model.model.layers[0]
    x = outlier_inputs()
    kw = layer_kwargs(model, x.shape[1])
    with torch.no_grad():
        ref = layer(x, **kw) - x                 # the residual branch only
        r, a = copy.deepcopy(layer), copy.deepcopy(layer)
        quantize_layer_rtn(r, 3, 16)
        awq_layer(a, x, kw, 3, 16)
        e_rtn = float((r(x, **kw) - x - ref).pow(2).mean())
        e_awq = float((a(x, **kw) - x - ref).pow(2).mean())
    assert e_awq < e_rtn


def test_quantize_model_awq_runs_layer_by_layer_and_beats_rtn():
    model = tiny_llama()
    with torch.no_grad():
        for layer in model.model.layers:          # outlier channels in the activations, as in real LLMs
            layer.input_layernorm.weight[:2] = 20.0
            layer.post_attention_layernorm.weight[3] = 20.0
    calib = torch.randint(0, 64, (4, 16), generator=torch.Generator().manual_seed(0))
    test = torch.randint(0, 64, (4, 16), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        ref = model(test).logits
        alphas = quantize_model_awq(copy.deepcopy(model), calib, 3, 16)
        awq = copy.deepcopy(model)
        quantize_model_awq(awq, calib, 3, 16, n_tokens=32)
        e_awq = float((awq(test).logits - ref).pow(2).mean())
        clipped = copy.deepcopy(model)
        quantize_model_awq(clipped, calib, 3, 16, clip=True)
        e_clip = float((clipped(test).logits - ref).pow(2).mean())
        e_rtn = float((quantize_model_rtn(copy.deepcopy(model), 3, 16)(test).logits - ref).pow(2).mean())
    assert len(alphas) == 2 and all(set(a) == {"qkv", "o", "gate_up", "down"} for a in alphas)
    assert e_awq < e_rtn and e_clip < e_rtn


def test_clip_search_matches_brute_force_per_row_and_group():
    g = torch.Generator().manual_seed(0)
    w = torch.distributions.StudentT(3.0).sample((4, 32))               # heavy tails: clipping pays
    x = torch.randn(64, 32, generator=g)
    clipped = clip_search(w, x, bits=3, group_size=16)
    for r in range(4):
        for k in range(2):
            cols = slice(16 * k, 16 * (k + 1))
            wr, xr = w[r:r + 1, cols], x[:, cols]
            amax = wr.abs().max()
            errs = [float(((xr @ rtn(wr.clamp(-amax * (1 - i / 20), amax * (1 - i / 20)), 3, 16).T - xr @ wr.T)
                           .pow(2).mean())) for i in range(10)]
            m = amax * (1 - min(range(10), key=errs.__getitem__) / 20)
            assert torch.allclose(clipped[r:r + 1, cols], wr.clamp(-m, m))
    err = lambda v: float((x @ rtn(v, 3, 16).T - x @ w.T).pow(2).mean())
    assert err(clipped) < err(w)


def test_salient_mask_and_act_scale():
    x = outlier_inputs()
    xm = act_scale(x)
    assert torch.allclose(xm, x.abs().mean(dim=(0, 1)))
    w = torch.randn(16, 64)
    w[:, 10] *= 100
    assert set(torch.nonzero(salient_mask(w, xm, 0.04, "activation")).flatten().tolist()) == {0, 1, 2}
    assert 10 in torch.nonzero(salient_mask(w, xm, 0.01, "weight")).flatten().tolist()
    assert int(salient_mask(w, xm, 0.01, "random", torch.Generator().manual_seed(0)).sum()) == 1


def test_bad_input():
    fc = nn.Linear(8, 4)
    with pytest.raises(ValueError, match="in_features"):
        search_scale(fc, [fc], torch.randn(3, 5), 4, None)
    with pytest.raises(ValueError, match="group_size"):
        rtn(torch.randn(4, 8), 4, 0)
    with pytest.raises(ValueError, match="2-d"):
        rtn(torch.randn(8), 4, None)
    with pytest.raises(ValueError, match="positive"):
        fold_scale(nn.LayerNorm(8), [fc], -torch.ones(8))
    with pytest.raises(TypeError, match="fold"):
        fold_scale(nn.ReLU(), [fc], torch.ones(8))
    with pytest.raises(ValueError, match="by must be"):
        salient_mask(fc.weight, torch.ones(8), 0.1, "size")
    with pytest.raises(TypeError):
        act_scale(torch.ones(3, 4, dtype=torch.int64))
    with pytest.raises(ValueError, match="token ids"):
        quantize_model_awq(tiny_llama(), torch.randn(2, 8), 4, None)
    with pytest.raises(ValueError, match="position_embeddings"):
        awq_layer(tiny_llama().model.layers[0], torch.randn(1, 4, 64), {}, 4, None)
