"""helpers.quant.smoothquant: smoothing is exact in float, s at its α = 0 / 1 limits, the int8 × int8 → int32
path equals the fake-quant product, smoothing helps W8A8 where activations have outlier channels, bad input."""
import copy

import pytest
import torch
from torch import nn
from transformers import LlamaConfig, LlamaForCausalLM

from helpers.quant.smoothquant import (W8A8Linear, activation_picture, activation_stats, int8_matmul,
                                       quantize_model_w8a8, smooth, smooth_model, smoothing_scales)


def tiny_llama(seed=0):
    torch.manual_seed(seed)
    cfg = LlamaConfig(vocab_size=64, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, head_dim=16)
    m = LlamaForCausalLM(cfg).eval()
    with torch.no_grad():
        for layer in m.model.layers:      # RMSNorm weights with outlier channels → outlier activations
            layer.input_layernorm.weight.uniform_(0.5, 1.5)
            layer.input_layernorm.weight[:2] = 40.0
            layer.post_attention_layernorm.weight.uniform_(0.5, 1.5)
            layer.post_attention_layernorm.weight[5] = 40.0
    return m


def windows(n=4, seq=16):
    return torch.randint(0, 64, (n, seq), generator=torch.Generator().manual_seed(0))


def test_activation_stats_match_direct_computation():
    m = tiny_llama()
    w = windows()
    absmax = activation_stats(m, w)
    mean = activation_stats(m, w, "mean")
    assert len(absmax) == 2 * 7
    h = m.model.embed_tokens(w)                                 # layer 0's input_layernorm output, by hand
    xn = m.model.layers[0].input_layernorm(h)
    assert torch.allclose(absmax["model.layers.0.self_attn.q_proj"], xn.abs().amax(dim=(0, 1)), rtol=1e-6)
    assert torch.allclose(mean["model.layers.0.self_attn.k_proj"], xn.abs().mean(dim=(0, 1)), rtol=1e-5)
    pic = activation_picture(m, w[0])
    assert pic.shape == (16, 64) and torch.allclose(pic, xn[0].abs())


def test_smoothing_scales_limits_and_formula():
    x_max = torch.tensor([1.0, 8.0, 50.0])
    w1 = torch.tensor([[0.5, -0.1, 0.2], [0.1, 0.4, -0.05]])
    w2 = torch.tensor([[-0.9, 0.2, 0.1]])
    w_max = torch.tensor([0.9, 0.4, 0.2])
    assert torch.allclose(smoothing_scales(x_max, [w1, w2], 1.0), x_max)           # α = 1: all into W
    assert torch.allclose(smoothing_scales(x_max, [w1, w2], 0.0), 1 / w_max)       # α = 0: weights normalised
    assert torch.allclose(smoothing_scales(x_max, [w1, w2], 0.5), (x_max / w_max).sqrt())
    # after smoothing at α = 0.5, activation and weight channel maxima are equal: sqrt(max|X_j| max|W_j|)
    s = smoothing_scales(x_max, [w1, w2], 0.5)
    assert torch.allclose(x_max / s, torch.stack([w1.abs().amax(0), w2.abs().amax(0)]).amax(0) * s)


def test_smooth_model_keeps_logits_and_flattens_activations():
    m = tiny_llama()
    w = windows()
    stats = activation_stats(m, w)
    with torch.no_grad():
        ref = m(w).logits
        s = copy.deepcopy(m)
        smooth_model(s, stats, alpha=0.5)
        out = s(w).logits
    assert float((out - ref).abs().max() / ref.abs().max()) <= 1e-4
    after = activation_stats(s, w)["model.layers.0.self_attn.q_proj"]
    before = stats["model.layers.0.self_attn.q_proj"]
    assert float(after.max() / after.median()) < float(before.max() / before.median()) / 4


def test_smooth_alpha_one_makes_activation_channel_max_one():
    torch.manual_seed(0)
    norm, fc = nn.RMSNorm(16), nn.Linear(16, 8)
    x = torch.randn(32, 16) * torch.linspace(0.1, 20, 16)
    with torch.no_grad():
        y = fc(norm(x))
        a = norm(x).abs().amax(0)
        smooth(norm, [fc], a, alpha=1.0)
        assert torch.allclose(norm(x).abs().amax(0), torch.ones(16), rtol=1e-5)
        assert torch.allclose(fc(norm(x)), y, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("weight,act", [("channel", "token"), ("tensor", "tensor"), ("tensor", "token")])
def test_int8_path_equals_fake_quant(weight, act):
    torch.manual_seed(0)
    fc = nn.Linear(96, 40)
    x = torch.randn(3, 7, 96) * 3
    q = W8A8Linear(fc, weight, act)
    fake, integer = q(x), q.forward_int(x)
    q.integer = True
    assert torch.equal(q(x), integer)
    assert integer.shape == fake.shape == (3, 7, 40)
    assert torch.allclose(integer, fake, rtol=1e-5, atol=1e-5 * float(fake.abs().max()))
    # and the fake-quant product is a direct small computation: per-token / per-channel symmetric int8
    xf = x.reshape(-1, 96)
    sx = (xf.abs().amax(1, keepdim=True) if act == "token" else xf.abs().amax()) / 127.5
    sw = (fc.weight.abs().amax(1, keepdim=True) if weight == "channel" else fc.weight.abs().amax()) / 127.5
    xq = torch.clamp(torch.round(xf * (1 / sx)), -128, 127) * sx            # x · (1/s), as affine.py
    wq = torch.clamp(torch.round(fc.weight * (1 / sw)), -128, 127) * sw
    ref = (xq @ wq.T + fc.bias).reshape(3, 7, 40)
    assert torch.allclose(fake, ref.detach(), rtol=1e-4, atol=1e-4)


def test_int8_matmul_is_exact():
    g = torch.Generator().manual_seed(0)
    a = torch.randint(-128, 128, (33, 64), generator=g, dtype=torch.int8)
    b = torch.randint(-128, 128, (24, 64), generator=g, dtype=torch.int8)
    assert torch.equal(int8_matmul(a, b), a.long().mm(b.long().T).int())
    with pytest.raises(TypeError, match="int8"):
        int8_matmul(a.int(), b)


def test_smoothing_helps_w8a8_with_outlier_channels():
    m = tiny_llama()
    w = windows()
    stats = activation_stats(m, w)
    with torch.no_grad():
        ref = m(w).logits
        plain = quantize_model_w8a8(copy.deepcopy(m), "tensor", "tensor")
        smoothed = quantize_model_w8a8(smooth_model(copy.deepcopy(m), stats, 0.5), "tensor", "tensor")
        e_plain = float((plain(w).logits - ref).pow(2).mean())
        e_smooth = float((smoothed(w).logits - ref).pow(2).mean())
    assert e_smooth < e_plain / 2


def test_bad_input():
    m = tiny_llama()
    with pytest.raises(ValueError, match="alpha"):
        smoothing_scales(torch.ones(4), [torch.ones(2, 4)], 1.5)
    with pytest.raises(ValueError, match="in ="):
        smoothing_scales(torch.ones(4), [torch.ones(2, 3)], 0.5)
    with pytest.raises(KeyError, match="activation_stats"):
        smooth_model(m, {}, 0.5)
    with pytest.raises(ValueError, match="stat"):
        activation_stats(m, windows(), "median")
    with pytest.raises(ValueError, match="token ids"):
        activation_stats(m, torch.randn(2, 4))
    with pytest.raises(ValueError, match="granularity"):
        W8A8Linear(nn.Linear(4, 4), "group", "token")
    with pytest.raises(ValueError, match="no linear"):
        activation_picture(m, windows()[0], 0, "mlp.nothing")
