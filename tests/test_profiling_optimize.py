"""helpers.profiling.optimize: the phased greedy pipeline against transformers' own generate, the token-forward
count against the model's actual inputs, and the timer's contract."""
import pytest
import torch
from torch.profiler import ProfilerActivity, profile

from helpers.profiling.optimize import cached_step, generate, interleaved_min, recompute_step, token_forwards


class CharTok:
    """The two tokenizer calls `generate` makes: tok(text, return_tensors="pt").input_ids and tok.decode(ids)."""

    def __call__(self, text, return_tensors="pt"):
        return type("Enc", (), {"input_ids": torch.tensor([[ord(c) % 64 for c in text]])})()

    def decode(self, ids):
        return "".join(chr(48 + i % 64) for i in ids)


@pytest.fixture(scope="module")
def llama():
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                      num_key_value_heads=2, max_position_embeddings=64)
    return LlamaForCausalLM(cfg).eval()


@pytest.mark.parametrize("use_cache", [False, True])
def test_greedy_tokens_equal_transformers_generate(llama, use_cache):
    prompt = "hello world"
    ids = CharTok()(prompt).input_ids
    ref = llama.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=10, do_sample=False,
                         pad_token_id=0)[0, ids.shape[1]:].tolist()
    new, text = generate(llama, CharTok(), prompt, 10, use_cache)
    assert new == ref
    assert text == CharTok().decode(ref)


@pytest.mark.parametrize("use_cache", [False, True])
def test_token_forwards_counts_what_the_model_sees(llama, use_cache):
    seen = []
    h = llama.register_forward_pre_hook(lambda m, args, kw: seen.append(kw.get("input_ids", args[0] if args else None)
                                                                         .numel()), with_kwargs=True)
    try:
        generate(llama, CharTok(), "abc", 4, use_cache)
    finally:
        h.remove()
    assert sum(seen) == token_forwards(3, 4, use_cache)
    assert token_forwards(3, 4, False) == 3 + 4 + 5 + 6 and token_forwards(3, 4, True) == 6


def test_a_custom_decode_step_is_the_one_used(llama):
    calls = []

    def step(model, ids, nxt, past):
        calls.append((ids.shape[1], nxt.shape))
        return cached_step(model, ids, nxt, past)

    new, _ = generate(llama, CharTok(), "abc", 4, True, step=step)
    assert calls == [(4, (1, 1)), (5, (1, 1)), (6, (1, 1))]  # n - 1 decode steps, the sequence one longer each
    assert new == generate(llama, CharTok(), "abc", 4, False, step=recompute_step)[0]


def test_phases_are_recorded(llama):
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        generate(llama, CharTok(), "abc", 5, True)
    counts = {e.key: e.count for e in prof.key_averages() if e.key in ("tokenize", "prefill", "sample", "decode")}
    assert counts == {"tokenize": 1, "prefill": 1, "sample": 5, "decode": 4}


def test_interleaved_min_order_and_errors():
    calls = []
    mins, times = interleaved_min({"a": lambda: calls.append("a"), "b": lambda: calls.append("b")}, repeats=3)
    assert calls == ["a", "b"] * 3
    assert set(mins) == {"a", "b"} and all(len(t) == 3 and mins[k] == min(t) for k, t in times.items())
    with pytest.raises(ValueError):
        interleaved_min({"a": lambda: None}, repeats=0)
    with pytest.raises(TypeError):
        interleaved_min({"a": 3})
    with pytest.raises(ValueError):
        generate(None, CharTok(), "x", 0, True)
