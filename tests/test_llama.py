"""Our Llama forward (helpers/models/llama.py), the contiguous-cache reference generator (helpers/serving/kv_cache.py)
and the course GPT behind the same serving protocol (GPTForServing in helpers/models/gpt.py)."""
import math

import pytest
import torch

from helpers.models.gpt import GPT, GPTConfig, GPTForServing
from helpers.models.llama import (Llama, LlamaConfig, apply_rope, causal_attention, reference_attend, rope_tables)
from helpers.serving.kv_cache import (LENGTH_STATS, ContiguousKVCache, contiguous_waste, generate, paged_waste,
                                      sample_request_lengths)

torch.set_num_threads(1)


def tiny_hf_llama(tie=True, theta=500000.0, heads=6, kv_heads=2):
    from transformers import LlamaConfig as HFConfig, LlamaForCausalLM

    torch.manual_seed(0)
    cfg = HFConfig(vocab_size=97, hidden_size=48, intermediate_size=80, num_hidden_layers=3,
                   num_attention_heads=heads, num_key_value_heads=kv_heads, max_position_embeddings=64,
                   rms_norm_eps=1e-5, tie_word_embeddings=tie, rope_theta=theta, attn_implementation="eager")
    hf = LlamaForCausalLM(cfg).eval()
    with torch.no_grad():  # RMSNorm gains are ones at init: make them matter
        for name, p in hf.named_parameters():
            if name.endswith("layernorm.weight") or name == "model.norm.weight":
                p.uniform_(0.5, 1.5)
    return hf


def hf_logits(hf, idx):
    with torch.no_grad():
        return hf(idx).logits


# ---------------------------------------------------------------------------------------------- the pieces

def test_config_from_hf_reads_gqa_and_rope_theta():
    hf = tiny_hf_llama(tie=False, theta=12345.0)
    cfg = LlamaConfig.from_hf(hf.config)
    assert (cfg.n_heads, cfg.n_kv_heads, cfg.head_dim, cfg.rope_theta) == (6, 2, 8, 12345.0)
    assert cfg.tie_embeddings is False and cfg.max_seq_len == 64


def test_bad_configs_are_clear_errors():
    with pytest.raises(ValueError, match="multiple of n_kv_heads"):
        LlamaConfig(dim=48, n_heads=6, n_kv_heads=4)
    with pytest.raises(ValueError, match="divisible"):
        LlamaConfig(dim=50, n_heads=6, n_kv_heads=2)


def test_rope_keeps_norms_and_makes_scores_depend_on_distance_only():
    cos, sin = rope_tables(16, 64, 10000.0)
    torch.manual_seed(0)
    q, k = torch.randn(1, 1, 16), torch.randn(1, 1, 16)
    rot = lambda x, p: apply_rope(x, cos[[p]], sin[[p]])  # noqa: E731
    assert torch.allclose(rot(q, 37).norm(), q.norm(), atol=1e-5)
    s1 = (rot(q, 10) * rot(k, 3)).sum()  # distance 7
    s2 = (rot(q, 50) * rot(k, 43)).sum()  # distance 7
    s3 = (rot(q, 50) * rot(k, 40)).sum()  # distance 10
    assert torch.allclose(s1, s2, atol=1e-5) and not torch.allclose(s1, s3, atol=1e-3)


def test_causal_attention_equals_torch_sdpa_with_gqa():
    torch.manual_seed(0)
    q, k, v = torch.randn(7, 6, 8), torch.randn(7, 2, 8), torch.randn(7, 2, 8)
    ours = causal_attention(q, k, v, torch.arange(7))
    ref = torch.nn.functional.scaled_dot_product_attention(
        q.transpose(0, 1), k.transpose(0, 1), v.transpose(0, 1), is_causal=True, enable_gqa=True).transpose(0, 1)
    assert (ours - ref).abs().max() < 1e-5


# ---------------------------------------------------------------------------------------------- vs transformers

@pytest.mark.parametrize("tie", [True, False])
def test_logits_equal_transformers_on_a_tiny_random_llama(tie):
    hf = tiny_hf_llama(tie=tie)
    ours = Llama.from_hf(hf)
    idx = torch.randint(0, 97, (2, 20), generator=torch.Generator().manual_seed(1))
    assert (ours.logits(idx) - hf_logits(hf, idx)).abs().max() < 1e-5
    assert ours.lm_head.weight is ours.embed_tokens.weight if tie else not torch.equal(
        ours.lm_head.weight, ours.embed_tokens.weight)
    assert ours.embed_tokens.weight.data_ptr() != hf.model.embed_tokens.weight.data_ptr()  # a copy


def test_generate_equals_transformers_greedy_generate_on_a_tiny_llama():
    hf = tiny_hf_llama()
    ours = Llama.from_hf(hf)
    prompt = [5, 17, 3, 88, 42]
    with torch.no_grad():
        want = hf.generate(torch.tensor([prompt]), max_new_tokens=20, do_sample=False, eos_token_id=None,
                           pad_token_id=0)[0, len(prompt):].tolist()
    assert generate(ours, prompt, 20) == want


def test_forward_rejects_bad_shapes_and_positions():
    ours = Llama.from_hf(tiny_hf_llama())
    with pytest.raises(ValueError, match="positions must lie"):
        ours(torch.tensor([1, 2]), torch.tensor([0, 64]), reference_attend)
    with pytest.raises(ValueError, match="must both be"):
        ours(torch.tensor([[1, 2]]), torch.tensor([0, 1]), reference_attend)


@pytest.fixture(scope="module")
def smollm2():
    from helpers import llm

    model, tok = llm.load()
    return model, tok, Llama.from_hf(model)


@pytest.mark.slow
def test_smollm2_logits_equal_transformers(smollm2):
    model, tok, ours = smollm2
    assert (ours.cfg.n_heads, ours.cfg.n_kv_heads, ours.cfg.rope_theta) == (9, 3, 100000.0)
    idx = torch.tensor([tok.encode("The capital of France is Paris. It is known for the Eiffel Tower and")])
    assert (ours.logits(idx) - hf_logits(model, idx)).abs().max() <= 1e-4


@pytest.mark.slow
def test_smollm2_generate_equals_transformers_generate(smollm2):
    model, tok, ours = smollm2
    prompt = tok.encode("The three primary colors are")
    with torch.no_grad():
        want = model.generate(torch.tensor([prompt]), max_new_tokens=20, do_sample=False)[0, len(prompt):].tolist()
    assert generate(ours, prompt, 20, eos_id=tok.eos_token_id) == want


# ---------------------------------------------------------------------------------------------- generate / cache

def test_generate_stops_at_eos_and_validates():
    ours = Llama.from_hf(tiny_hf_llama())
    full = generate(ours, [1, 2, 3], 12)
    eos = full[4]
    assert generate(ours, [1, 2, 3], 12, eos_id=eos) == full[:full.index(eos) + 1]
    with pytest.raises(ValueError, match="at least one token"):
        generate(ours, [], 3)
    with pytest.raises(ValueError, match="max_seq_len"):
        generate(ours, [1] * 60, 5)
    with pytest.raises(ValueError, match="max_new_tokens"):
        generate(ours, [1], 0)


def test_contiguous_cache_refuses_gaps_and_overflow():
    cache = ContiguousKVCache(2, 2, 8, 2, 4)
    with pytest.raises(ValueError, match="new positions must be 0"):
        cache.attend(0, torch.tensor([1, 2]))
    with pytest.raises(ValueError, match="max_len=8"):
        cache.attend(1, torch.arange(9))
    with pytest.raises(IndexError, match="sequence 2"):
        cache.attend(2, torch.arange(1))
    assert cache.nbytes == 2 * 2 * 2 * 8 * 2 * 4 * 4


# ---------------------------------------------------------------------------------------------- waste arithmetic

def test_waste_closed_forms():
    lengths = [1, 16, 17, 100]
    c = contiguous_waste(lengths, 128)
    assert (c["reserved"], c["used"]) == (512, 134) and math.isclose(c["wasted_fraction"], 1 - 134 / 512)
    p = paged_waste(lengths, 16)
    assert (p["reserved"], p["used"]) == (16 + 16 + 32 + 112, 134)
    assert paged_waste(lengths, 1)["wasted_fraction"] == 0.0
    with pytest.raises(ValueError):
        contiguous_waste([129], 128)


def test_sampled_lengths_have_the_papers_means():
    for name, (mean_in, mean_out) in LENGTH_STATS.items():
        pairs = sample_request_lengths(name, 20000, seed=0)
        assert all(p >= 1 and o >= 1 and p + o <= 2048 for p, o in pairs)
        se_in, se_out = mean_in / math.sqrt(20000), mean_out / math.sqrt(20000)  # exponential: sd = mean
        # ceil adds ~0.5 token; clipping at 2048 removes a little of the ShareGPT output tail
        assert abs(sum(p for p, _ in pairs) / 20000 - mean_in) < 4 * se_in + 0.6
        assert abs(sum(o for _, o in pairs) / 20000 - mean_out) < 4 * se_out + 2
    with pytest.raises(ValueError, match="unknown dataset"):
        sample_request_lengths("wiki", 3)


# ---------------------------------------------------------------------------------------------- the course GPT

def test_gpt_for_serving_equals_gpt_forward_and_generate():
    torch.manual_seed(0)
    gpt = GPT(GPTConfig(block_size=32, vocab_size=65, n_layer=3, n_head=4, n_embd=96, bias=False)).eval()
    served = GPTForServing(gpt)
    assert (served.cfg.n_kv_heads, served.cfg.head_dim, served.cfg.max_seq_len) == (4, 24, 32)
    idx = torch.randint(0, 65, (1, 20), generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        ref = gpt(idx)[0][0]
        ours = served(idx[0], torch.arange(20), reference_attend)
    assert (ours - ref).abs().max() < 1e-5
    want = gpt.generate(idx[:, :5], 20, temperature=0)[0, 5:].tolist()
    assert generate(served, idx[0, :5].tolist(), 20) == want
    with pytest.raises(ValueError, match="max_seq_len 32"):
        generate(served, [1] * 20, 13)
