"""helpers/models/gpt.py: GPT-2 size, Hugging Face round trip, causality, sampling."""
import pytest
import torch

from helpers.models.gpt import GPT, GPTConfig, filter_logits, hf_to_ours, ours_to_hf

SMALL = GPTConfig(block_size=16, vocab_size=37, n_layer=2, n_head=2, n_embd=16)


def small_model(seed=0, **kw):
    torch.manual_seed(seed)
    return GPT(GPTConfig(**{**SMALL.__dict__, **kw})).eval()


def test_gpt2_124m_parameter_count():
    with torch.device("meta"):  # no memory, no init cost
        model = GPT(GPTConfig.gpt2())
    assert model.num_params() == 124_439_808
    assert model.num_params(non_embedding=True) == 124_439_808 - 1024 * 768
    assert model.lm_head.weight is model.transformer.wte.weight  # tied


def test_config_validation():
    with pytest.raises(ValueError, match="divisible"):
        GPTConfig(n_embd=10, n_head=3)
    with pytest.raises(ValueError, match="dropout"):
        GPTConfig(dropout=1.0)
    with pytest.raises(ValueError, match="unknown GPT-2 size"):
        GPTConfig.gpt2("gpt3")


def test_forward_shapes_and_bad_input():
    model = small_model()
    idx = torch.randint(0, 37, (3, 10))
    logits, loss = model(idx, idx)
    assert logits.shape == (3, 10, 37) and loss.ndim == 0
    with pytest.raises(ValueError, match="block_size"):
        model(torch.zeros(1, 17, dtype=torch.long))
    with pytest.raises(ValueError, match=r"\(B, T\)"):
        model(torch.zeros(5, dtype=torch.long))


def test_causality_future_tokens_do_not_change_past_logits():
    model = small_model()
    idx = torch.randint(0, 37, (2, 12))
    changed = idx.clone()
    changed[:, 7:] = (changed[:, 7:] + 5) % 37
    a, _ = model(idx)
    b, _ = model(changed)
    assert torch.allclose(a[:, :7], b[:, :7], atol=1e-6)
    assert not torch.allclose(a[:, 7:], b[:, 7:])


def test_attention_maps_are_causal_and_match_fused_path():
    model = small_model()
    idx = torch.randint(0, 37, (2, 9))
    logits_fused, _ = model(idx)
    logits, _, maps = model(idx, return_attn=True)
    assert torch.allclose(logits, logits_fused, atol=1e-5)
    assert len(maps) == 2 and maps[0].shape == (2, 2, 9, 9)
    for att in maps:
        assert torch.all(att.triu(diagonal=1) == 0)
        assert torch.allclose(att.sum(-1), torch.ones(2, 2, 9))


def test_hf_round_trip_same_logits():
    transformers = pytest.importorskip("transformers")
    cfg = transformers.GPT2Config(vocab_size=37, n_positions=16, n_embd=16, n_layer=2, n_head=2,
                                  resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0, bos_token_id=36, eos_token_id=36)
    torch.manual_seed(0)
    hf = transformers.GPT2LMHeadModel(cfg).eval()
    ours = GPT.from_hf(hf).eval()
    idx = torch.randint(0, 37, (2, 16))
    with torch.no_grad():
        ref = hf(idx).logits
        got, _ = ours(idx)
        back = ours.to_hf()(idx).logits
    assert (got - ref).abs().max().item() <= 1e-4
    assert (back - ref).abs().max().item() <= 1e-4
    sd = hf.state_dict()
    assert sd["transformer.h.0.attn.c_attn.weight"].shape == (16, 48)  # Conv1D: (in, out)
    assert hf_to_ours(sd)["transformer.h.0.attn.c_attn.weight"].shape == (48, 16)
    round_trip = ours_to_hf(hf_to_ours(sd))
    assert all(torch.equal(round_trip[k], sd[k]) for k in round_trip)


def test_to_hf_rejects_biasless_model():
    with pytest.raises(ValueError, match="bias"):
        small_model(bias=False).to_hf()


def test_generate_shapes_and_determinism():
    model = small_model()
    idx = torch.zeros(2, 3, dtype=torch.long)
    a = model.generate(idx, 20, top_k=5, generator=torch.Generator().manual_seed(1))
    b = model.generate(idx, 20, top_k=5, generator=torch.Generator().manual_seed(1))
    assert a.shape == (2, 23) and torch.equal(a, b) and torch.equal(a[:, :3], idx)
    greedy = model.generate(idx, 20, temperature=0)  # longer than block_size: context is cropped
    assert greedy.shape == (2, 23) and torch.equal(greedy[0], greedy[1])
    with pytest.raises(ValueError, match="temperature"):
        model.generate(idx, 1, temperature=-1)


def test_top_k_top_p_filtering():
    logits = torch.log(torch.tensor([[0.5, 0.3, 0.15, 0.05]]))
    assert torch.isinf(filter_logits(logits, top_k=2)).tolist() == [[False, False, True, True]]
    assert torch.isinf(filter_logits(logits, top_p=0.7)).tolist() == [[False, False, True, True]]
    assert torch.isinf(filter_logits(logits, top_p=0.81)).tolist() == [[False, False, False, True]]
    assert torch.isinf(filter_logits(logits, top_p=0.01)).tolist() == [[False, True, True, True]]
    shuffled = logits[:, [2, 0, 3, 1]]  # order must not matter
    assert torch.isinf(filter_logits(shuffled, top_p=0.7)).tolist() == [[True, False, True, False]]
    for bad in (dict(top_k=0), dict(top_p=0.0), dict(top_p=1.5)):
        with pytest.raises(ValueError):
            filter_logits(logits, **bad)
    model = small_model()
    out = model.generate(torch.zeros(1, 1, dtype=torch.long), 10, top_k=1, generator=torch.Generator().manual_seed(0))
    assert torch.equal(out, model.generate(torch.zeros(1, 1, dtype=torch.long), 10, temperature=0))


def test_generate_text_is_seeded_and_keeps_the_prompt():
    from helpers.lm import generate_text
    from helpers.tokenizers import CharTokenizer

    tok = CharTokenizer("abcdef\n")
    torch.manual_seed(0)
    model = GPT(GPTConfig(block_size=8, vocab_size=tok.vocab_size, n_layer=1, n_head=2, n_embd=8)).eval()
    a = generate_text(model, tok.encode, tok.decode, "abc", 20, temperature=1.0, seed=3)
    b = generate_text(model, tok.encode, tok.decode, "abc", 20, temperature=1.0, seed=3)
    assert a == b and a.startswith("abc") and len(a) == 23
    greedy = generate_text(model, tok.encode, tok.decode, "abc", 20, temperature=0.0)
    assert greedy == generate_text(model, tok.encode, tok.decode, "abc", 20, top_k=1, seed=9)


def test_lm_uses_nanogpts_schedule():
    import math

    from helpers.lm import cosine_lr

    lr, lo, warm, decay = 1e-3, 1e-4, 100, 2000
    assert cosine_lr(0, decay, lr, lo, warm) == pytest.approx(lr / 101)  # nanoGPT: lr * (it + 1) / (warmup + 1)
    assert cosine_lr(99, decay, lr, lo, warm) == pytest.approx(lr * 100 / 101)
    assert cosine_lr(100, decay, lr, lo, warm) == pytest.approx(lr)
    assert cosine_lr(1050, decay, lr, lo, warm) == pytest.approx(lo + 0.5 * (lr - lo) * (1 + math.cos(math.pi * 0.5)))
    assert cosine_lr(2000, decay, lr, lo, warm) == pytest.approx(lo) and cosine_lr(5000, decay, lr, lo, warm) == lo
