"""llm-compressor against our from-scratch quantizers on a tiny random Llama (fast, exact), its recipes and
errors, and (slow) one GPTQ run on the course LLM scored with our perplexity."""
import pytest
import torch

from helpers.quant import crosscheck, gptq
from helpers.quant.affine import QSpec

TINY = dict(vocab_size=256, hidden_size=128, intermediate_size=256, num_hidden_layers=2, num_attention_heads=4,
            num_key_value_heads=2, max_position_embeddings=64, tie_word_embeddings=True)
LINEARS = ("self_attn.q_proj", "self_attn.k_proj", "self_attn.o_proj", "mlp.down_proj")


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """A random 2-layer Llama on disk (oneshot reads its config back from `name_or_path`) and calibration ids."""
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("tiny-llama")
    LlamaForCausalLM(LlamaConfig(**TINY)).save_pretrained(path)
    calib = torch.randint(0, TINY["vocab_size"], (8, 32), generator=torch.Generator().manual_seed(1))
    return path, calib


def _load(path):
    from transformers import LlamaForCausalLM

    return LlamaForCausalLM.from_pretrained(path).eval()


def _layer0_inputs(model, name, calib):
    """What `name` in decoder layer 0 sees on `calib`, (n·T, in): quantization upstream cannot change it."""
    seen = []
    handle = model.model.layers[0].get_submodule(name).register_forward_hook(lambda m, i, o: seen.append(i[0]))
    with torch.no_grad():
        model(calib)
    handle.remove()
    return torch.cat(seen).reshape(-1, seen[0].shape[-1])


def test_rtn_w4_g64_asym_forward_equals_ours(tiny):
    """QuantizationModifier, int4 asymmetric groups of 64: each linear computes x @ Q.T with Q our RTN weight."""
    path, calib = tiny
    float_model = _load(path)
    result = crosscheck.llmcompressor_oneshot("rtn", 4, 64, calib, model=_load(path))
    x = torch.randn(5, 256, generator=torch.Generator().manual_seed(2))
    for layer in range(2):
        for name in LINEARS:
            theirs = result.model.model.layers[layer].get_submodule(name)
            w = float_model.model.layers[layer].get_submodule(name).weight.detach()  # (out, in)
            q = gptq.rtn_quantize(w, QSpec(bits=4, symmetric=False, granularity="channel"), group_size=64)
            xi = x[:, :w.shape[1]]
            with torch.no_grad():
                torch.testing.assert_close(theirs(xi), xi @ q.T, rtol=0, atol=1e-6)


@pytest.mark.parametrize("group_size", [64, None])
def test_gptq_w4_asym_equals_ours_with_static_groups(tiny, group_size):
    """GPTQModifier (actorder=None, dampening 0.01, block 128) on a layer-0 linear = our gptq_quantize on the
    Hessian of the same inputs — with static_groups=True: llm-compressor fixes every group's grid from the
    original weight before the column loop (our default, like the reference, picks it when the group is reached)."""
    path, calib = tiny
    float_model = _load(path)
    result = crosscheck.llmcompressor_oneshot("gptq", 4, group_size, calib, model=_load(path))
    for name in ("self_attn.q_proj", "mlp.gate_proj"):
        w = float_model.model.layers[0].get_submodule(name).weight.detach()
        h = gptq.hessian(_layer0_inputs(float_model, name, calib))
        ours, _ = gptq.gptq_quantize(w, h, QSpec(bits=4, symmetric=False, granularity="channel"),
                                     group_size=group_size, static_groups=True)
        theirs = result.model.model.layers[0].get_submodule(name).weight.detach()  # GPTQ writes Q in place
        torch.testing.assert_close(theirs, ours, rtol=0, atol=1e-5)
        assert not torch.equal(theirs, w)


def test_recipes_and_errors():
    (gptq_mod,) = crosscheck.recipe("gptq", 4, 64)
    args = gptq_mod.config_groups["group_0"].weights
    assert (args.num_bits, args.symmetric, str(args.strategy), args.group_size) == (4, False, "group", 64)
    assert gptq_mod.actorder is None and gptq_mod.dampening_frac == 0.01
    assert [type(m).__name__ for m in crosscheck.recipe("awq")] == ["AWQModifier", "QuantizationModifier"]
    assert [type(m).__name__ for m in crosscheck.recipe("smoothquant-gptq")] == ["SmoothQuantModifier", "GPTQModifier"]
    with pytest.raises(ValueError, match="method"):
        crosscheck.recipe("hqq")
    with pytest.raises(ValueError, match="bits"):
        crosscheck.weight_scheme(1, 64)
    with pytest.raises(ValueError, match="calib"):
        crosscheck.calibration_dataset(torch.rand(2, 8))
    with pytest.raises(ValueError, match="calib"):
        crosscheck.llmcompressor_oneshot("gptq", 4, 64, None)
    ds = crosscheck.calibration_dataset(torch.arange(12).view(3, 4))
    assert ds["input_ids"] == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9, 10, 11]]


@pytest.mark.slow
def test_gptq_on_the_llm_is_close_to_float():
    """llm-compressor GPTQ W4 g64 on SmolLM2 (4 calibration windows): perplexity within 40% of float's."""
    from helpers import llm
    from helpers.quant import evaluate

    model, tok = llm.load()
    windows = evaluate.eval_windows(evaluate.wikitext2_tokens(tok, "test"), 128, 2)
    base = evaluate.perplexity(model, windows).ppl
    result = crosscheck.llmcompressor_oneshot("gptq", 4, 64, evaluate.calibration_windows(tok, 4, 128), model=model)
    ppl = evaluate.perplexity(result.model, windows).ppl
    assert base < ppl < 1.4 * base, (base, ppl)
