"""GPTQ (helpers/quant/gptq.py) against closed forms, a direct OBQ computation, and llmcompressor."""
import pytest
import torch
from torch import nn

from helpers.quant import QSpec
from helpers.quant import evaluate as ev
from helpers.quant.awq import quantize_model_rtn
from helpers.quant.gptq import (LLAMA_GROUPS, HessianAccumulator, gptq_quantize, hessian, layer_hessians,
                                quantize_model_gptq, rtn_quantize)


def correlated_inputs(n_tokens, n_in, seed=0):
    """Inputs (n_tokens, n_in) with correlated features of unequal scale, like a transformer's activations."""
    g = torch.Generator().manual_seed(seed)
    mix = torch.randn(n_in, n_in, generator=g) / n_in ** 0.5
    x = torch.randn(n_tokens, n_in, generator=g) @ mix + 0.1 * torch.randn(n_tokens, n_in, generator=g)
    return x * (0.2 + 3 * torch.rand(n_in, generator=g))


def output_error(W, Q, X):
    return float(((X @ (W - Q).T) ** 2).sum())


# --- Hessian --------------------------------------------------------------------------------------------


def test_hessian_streaming_equals_closed_form_and_works_as_a_hook():
    x = correlated_inputs(300, 16).double()
    H = 2 * x.T @ x / 300                                        # closed form
    torch.testing.assert_close(hessian(x), H)
    acc = HessianAccumulator(16, dtype=torch.float64)
    for batch in x.split([7, 100, 1, 192]):                      # uneven batches
        acc.add(batch)
    assert acc.n == 300
    torch.testing.assert_close(acc.H, H, rtol=1e-12, atol=1e-12)

    lin = nn.Linear(16, 4).double()
    hook = HessianAccumulator(16, dtype=torch.float64)
    handle = hook.attach(lin)
    lin(x[:100].reshape(4, 25, 16))                              # (batch, seq, in) inputs are rows too
    lin(x[100:])
    handle.remove()
    lin(x)                                                       # no longer recorded
    torch.testing.assert_close(hook.H, H, rtol=1e-12, atol=1e-12)


# --- (a) GPTQ beats round-to-nearest on the output error -------------------------------------------------


@pytest.mark.parametrize("bits,group_size,act_order", [(4, None, False), (3, None, True), (3, 32, False),
                                                       (4, 32, True)])
def test_gptq_output_error_below_rtn(bits, group_size, act_order):
    X = correlated_inputs(1024, 128)
    W = torch.randn(64, 128, generator=torch.Generator().manual_seed(1))
    spec = QSpec(bits=bits, signed=False, granularity="channel")
    H = hessian(X)
    Q, info = gptq_quantize(W, H, spec, act_order=act_order, group_size=group_size)
    R = rtn_quantize(W, spec, group_size)
    assert output_error(W, Q, X) < output_error(W, R, X)
    # the OBQ steps' losses add up to the final quadratic error under the dampened Hessian:
    # Σ_rows (w-q) (H + λI) (w-q)ᵀ / 2 = ||(W-Q) Xᵀ||² / n + λ ||W-Q||² / 2
    lam = 0.01 * float(H.diag().mean())
    exact = output_error(W, Q, X) / 1024 + lam * float(((W - Q) ** 2).sum()) / 2
    assert info.loss == pytest.approx(exact, rel=1e-3)


def test_rtn_is_minmax_round_to_nearest_per_row_and_group():
    W = torch.randn(8, 64, generator=torch.Generator().manual_seed(2))
    for g in (None, 16):
        spec = QSpec(bits=4, signed=False, granularity="channel" if g is None else "group", group_size=g,
                     axis=0 if g is None else 1)
        torch.testing.assert_close(rtn_quantize(W, spec), spec.calibrate(W).fake_quantize(W), rtol=0, atol=0)


# --- (b) lazy batches = the plain column-by-column OBQ computation ---------------------------------------


def obq_direct(W, H, spec, order, percdamp=0.01, group_size=None):
    """OBQ written directly: keep the inverse Hessian of the remaining columns F; quantize column j,
    w_F -= (w_j - q_j) / [H_F⁻¹]_jj · [H_F⁻¹]_{j,F}, then remove j from H_F⁻¹ (Gaussian elimination)."""
    W = W.clone().double()
    n = W.shape[1]
    Hinv = torch.linalg.inv(H.double() + percdamp * H.diag().mean() * torch.eye(n, dtype=torch.float64))
    row_spec = QSpec(bits=spec.bits, signed=spec.signed, symmetric=spec.symmetric, granularity="channel", axis=0)
    grid = row_spec.calibrate(W)                                 # per-channel: one grid from the original W
    Q = torch.zeros_like(W)
    F = list(order)
    for k, j in enumerate(order):
        if group_size is not None and k % group_size == 0:       # a group starts: grid from the current W
            grid = row_spec.calibrate(W[:, list(order[k:k + group_size])])
        q = grid.fake_quantize(W[:, j:j + 1])[:, 0].double()
        err = (W[:, j] - q) / Hinv[j, j]
        W[:, F] -= err[:, None] * Hinv[j, F][None, :]            # W[:, j] becomes q
        Q[:, j] = q
        Hinv = Hinv - Hinv[:, j:j + 1] @ Hinv[j:j + 1, :] / Hinv[j, j]
        F.remove(j)
    return Q


@pytest.mark.parametrize("shape,group_size,act_order", [((4, 3), None, False), ((5, 7), None, True),
                                                        ((5, 7), 3, False), ((6, 8), 3, True)])
def test_lazy_batch_equals_direct_obq(shape, group_size, act_order):
    g = torch.Generator().manual_seed(3)
    W = torch.randn(*shape, generator=g, dtype=torch.float64)
    H = hessian(correlated_inputs(50, shape[1], seed=4).double())
    spec = QSpec(bits=3, signed=False, granularity="channel")
    order = torch.argsort(H.diag(), descending=True).tolist() if act_order else list(range(shape[1]))
    expected = obq_direct(W, H, spec, order, group_size=group_size)
    for blocksize in (1, 2, 128):                                # 2: groups of 3 straddle the blocks
        Q, info = gptq_quantize(W, H, spec, blocksize=blocksize, act_order=act_order, group_size=group_size)
        torch.testing.assert_close(Q, expected, rtol=0, atol=1e-6)
        torch.testing.assert_close(info.dequantize().double(), Q, rtol=0, atol=1e-6)


# --- (c) act-order ------------------------------------------------------------------------------------


def test_act_order_permutation_and_grid():
    X = correlated_inputs(512, 48, seed=5)
    W = torch.randn(16, 48, generator=torch.Generator().manual_seed(6))
    H = hessian(X)
    spec = QSpec(bits=4, signed=False, granularity="channel")
    Q0, info0 = gptq_quantize(W, H, spec)
    Q, info = gptq_quantize(W, H, spec, act_order=True)
    assert torch.equal(info.perm, torch.argsort(H.diag(), descending=True))
    assert torch.equal(info0.perm, torch.arange(48))
    # relabelling the inputs relabels the answer: the inverse permutation puts every column back
    P = torch.randperm(48, generator=torch.Generator().manual_seed(7))
    QP, _ = gptq_quantize(W[:, P], H[P][:, P], spec, act_order=True)
    torch.testing.assert_close(QP, Q[:, P], rtol=0, atol=1e-6)
    # the order changes which grid point each weight gets, never the grid: same per-row scale and zero-point,
    # and every value is one of its row's 16 points
    assert torch.equal(info.scale, info0.scale) and torch.equal(info.zero_point, info0.zero_point)
    assert int(info.codes.min()) >= 0 and int(info.codes.max()) <= 15
    torch.testing.assert_close(info.dequantize(), Q, rtol=0, atol=0)
    assert not torch.equal(Q, Q0)


def test_act_order_dynamic_groups_follow_processing_order():
    X = correlated_inputs(512, 48, seed=8)
    W = torch.randn(16, 48, generator=torch.Generator().manual_seed(9))
    H = hessian(X)
    spec = QSpec(bits=4, signed=False, granularity="channel")
    Q, info = gptq_quantize(W, H, spec, act_order=True, group_size=16)
    assert info.scale.shape == (16, 3)
    # group k holds the columns processed k-th: perm[16k : 16k + 16]
    for k in range(3):
        assert torch.all(info.g_idx[info.perm[16 * k:16 * (k + 1)]] == k)
    torch.testing.assert_close(info.dequantize(), Q, rtol=0, atol=0)
    assert info.nbytes() == {"codes": 16 * 48 // 2, "scales": 16 * 3 * 2, "zeros": 16 * 3 // 2, "g_idx": 48 * 4}
    _, static = gptq_quantize(W, H, spec, act_order=True, group_size=16, static_groups=True)
    assert torch.equal(static.g_idx, torch.arange(48) // 16) and static.nbytes()["g_idx"] == 0


def test_dead_inputs_get_zero_weight():
    X = correlated_inputs(256, 12, seed=10)
    X[:, [2, 7]] = 0                                             # two inputs never fire
    W = torch.randn(4, 12, generator=torch.Generator().manual_seed(11))
    Q, _ = gptq_quantize(W, hessian(X), QSpec(bits=4, signed=False, granularity="channel"), act_order=True)
    assert torch.all(Q[:, [2, 7]] == 0)


# --- (d) bad input ------------------------------------------------------------------------------------


def test_bad_input_raises_clear_errors():
    W, H = torch.randn(4, 6), hessian(correlated_inputs(64, 6))
    spec = QSpec(bits=4, signed=False, granularity="channel")
    with pytest.raises(ValueError, match="not positive definite"):
        gptq_quantize(W, -torch.eye(6), spec)
    indefinite = torch.diag(torch.tensor([1.0, 1, 1, 1, 1, -50]))
    with pytest.raises(ValueError, match="not positive definite"):
        gptq_quantize(W, indefinite, spec, percdamp=0.0)
    with pytest.raises(ValueError, match=r"H must be \(in, in\)"):
        gptq_quantize(W, H[:5, :5], spec)
    with pytest.raises(ValueError, match="weight matrix"):
        gptq_quantize(W[0], H, spec)
    with pytest.raises(ValueError, match="symmetric"):
        gptq_quantize(W, H + torch.triu(torch.ones(6, 6), 1), spec)
    with pytest.raises(TypeError, match="floating"):
        gptq_quantize(W.int(), H, spec)
    with pytest.raises(ValueError, match="min-max"):
        gptq_quantize(W, H, QSpec(bits=4, method="mse"))
    with pytest.raises(ValueError, match="disagrees"):
        gptq_quantize(W, H, QSpec(bits=4, granularity="group", group_size=2), group_size=3)
    with pytest.raises(ValueError, match="bits"):
        QSpec(bits=1)
    with pytest.raises(ValueError, match="features"):
        HessianAccumulator(6).add(torch.randn(3, 5))


# --- the whole model ----------------------------------------------------------------------------------


def tiny_llama(seed=0):
    from transformers import LlamaConfig, LlamaForCausalLM
    torch.manual_seed(seed)
    cfg = LlamaConfig(vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64,
                      tie_word_embeddings=True)
    return LlamaForCausalLM(cfg).eval()


def test_layer_hessians_are_those_of_each_linears_inputs():
    model = tiny_llama()
    calib = torch.randint(0, 64, (5, 16), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        hidden = model.model.embed_tokens(calib)                 # (5, 16, 32)
        layer = model.model.layers[0]
        Hs = layer_hessians(layer, hidden, ev.layer_kwargs(model, 16), LLAMA_GROUPS, batch_size=2)
        # q/k/v read the normed input: closed form
        torch.testing.assert_close(Hs[LLAMA_GROUPS[0]], hessian(layer.input_layernorm(hidden)))
        # the others: inputs recorded while the whole layer runs
        seen = {names: [] for names in LLAMA_GROUPS}
        hooks = [layer.get_submodule(names[-1]).register_forward_hook(
            lambda m, a, o, names=names: seen[names].append(a[0])) for names in LLAMA_GROUPS]
        ev.run_layer(layer, hidden, ev.layer_kwargs(model, 16))
        for h in hooks:
            h.remove()
    for names in LLAMA_GROUPS:
        torch.testing.assert_close(Hs[names], hessian(torch.cat(seen[names])), rtol=1e-5, atol=1e-6)


def test_quantize_model_gptq_on_a_tiny_llama():
    calib = torch.randint(0, 64, (8, 32), generator=torch.Generator().manual_seed(1))
    test = torch.randint(0, 64, (4, 32), generator=torch.Generator().manual_seed(2))
    float_model, rtn_model = tiny_llama(), tiny_llama()
    quantize_model_rtn(rtn_model, 3, None)
    models, reports = {}, {}
    for true_sequential in (True, False):
        models[true_sequential] = tiny_llama()
        reports[true_sequential] = quantize_model_gptq(models[true_sequential], calib, bits=3,
                                                       true_sequential=true_sequential, desc=None)
    report, model = reports[True], models[True]
    assert [r["layer"] for r in report.rows] == [0] * 4 + [1] * 4
    assert all(r["rel_err"] < r["rtn_rel_err"] for r in report.rows)
    n_weights = sum(m.weight.numel() for m in ev.linear_layers(model).values())
    n_rows = sum(m.weight.shape[0] for m in ev.linear_layers(model).values())
    assert report.nbytes == {"codes": n_weights * 3 // 8, "scales": 2 * n_rows, "zeros": (3 * n_rows + 7) // 8,
                             "g_idx": 0}
    for m in ev.linear_layers(model).values():                   # every row on its own 8-point grid
        assert max(len(torch.unique(row)) for row in m.weight) <= 8
    # the first group sees the float layer either way; later ones differ
    q0 = model.model.layers[0].self_attn.q_proj.weight
    assert torch.equal(q0, models[False].model.layers[0].self_attn.q_proj.weight)
    assert not torch.equal(model.model.layers[1].mlp.down_proj.weight,
                           models[False].model.layers[1].mlp.down_proj.weight)
    with torch.no_grad():                                        # end to end: closer to float than RTN
        ref = float_model(test).logits
        err = {k: float(((m(test).logits - ref) ** 2).mean()) for k, m in
               [("gptq", model), ("rtn", rtn_model)]}
    assert err["gptq"] < err["rtn"]


# --- against the library practitioners use --------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize("group_size,act_order", [(None, False), (None, True), (32, False), (32, True)])
def test_matches_llmcompressor_with_static_grids(group_size, act_order):
    """llmcompressor's GPTQ takes the grids up front (static groups; act-order 'weight'): same grid in,
    same weight out."""
    from compressed_tensors.quantization import QuantizationArgs
    from llmcompressor.modifiers.gptq.gptq_quantize import quantize_weight
    X = correlated_inputs(512, 128, seed=12)
    W = torch.randn(32, 128, generator=torch.Generator().manual_seed(13))
    H = hessian(X)
    spec = QSpec(bits=4, signed=True, granularity="channel")     # signed codes, as compressed-tensors stores int4
    Q, info = gptq_quantize(W, H, spec, blocksize=64, act_order=act_order, group_size=group_size,
                            static_groups=True)
    args = QuantizationArgs(num_bits=4, type="int", symmetric=False, group_size=group_size,
                            strategy="channel" if group_size is None else "group",
                            actorder="weight" if act_order else None)
    Q_lib, loss, _ = quantize_weight(W[None].clone(), H[None].clone(), info.scale[None], info.zero_point[None],
                                     None, args, blocksize=64, percdamp=0.01)
    torch.testing.assert_close(Q_lib[0], Q, rtol=0, atol=1e-6)
    assert float(loss) == pytest.approx(info.loss, rel=1e-5)
