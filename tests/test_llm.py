"""The pretrained-LLM registry (helpers/llm.py) and the measuring tools of 1.2 (helpers/quant/evaluate.py)."""
import math

import pytest
import torch

from helpers import llm
from helpers.data import ChecksumError
from helpers.quant import evaluate as ev


def tiny_llama(layers=3, vocab=50, hidden=32):
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=vocab, hidden_size=hidden, intermediate_size=64, num_hidden_layers=layers,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64,
                      tie_word_embeddings=True)
    return LlamaForCausalLM(cfg).eval()


# ---------------------------------------------------------------------------------------------- registry

def test_bad_file_in_mirror_is_a_clear_error(tmp_path, monkeypatch):
    (tmp_path / llm.SMOLLM2.name).mkdir()
    (tmp_path / llm.SMOLLM2.name / llm.SMOLLM2.file).write_bytes(b"not a gguf")
    monkeypatch.setenv("COURSE_DATA_DIR", str(tmp_path))
    with pytest.raises(ChecksumError, match="reinstall"):
        llm.gguf_path()


def test_missing_model_names_the_remedy(monkeypatch):
    monkeypatch.setenv("COURSE_DATA_DIR", "/nonexistent")
    monkeypatch.setattr(llm.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(llm.ModelNotFound, match="make setup"):
        llm.gguf_path()
    with pytest.raises(KeyError, match="registry"):
        llm.gguf_path("gpt-5")


def test_installed_gguf_matches_its_checksum():
    path = llm.gguf_path()  # raises if make setup did not install it, or it is damaged
    assert path.name == llm.SMOLLM2.file and path.stat().st_size > 90e6


@pytest.mark.slow
def test_float_model_loads_and_answers():
    model, tok = llm.load()
    cfg = model.config
    assert (cfg.num_hidden_layers, cfg.hidden_size, cfg.intermediate_size) == (30, 576, 1536)
    assert llm.n_params(model) == 134_515_008  # the published 135M, tied embeddings counted once
    assert "paris" in llm.chat(model, tok, "What is the capital of France?", max_new_tokens=12).lower()


# ---------------------------------------------------------------------------------------------- perplexity

class Uniform(torch.nn.Module):
    """A 'model' with equal logits everywhere: its perplexity is exactly the vocabulary size."""

    def __init__(self, vocab):
        super().__init__()
        self.vocab = vocab

    def forward(self, x):
        return type("Out", (), {"logits": torch.zeros(*x.shape, self.vocab)})


def test_uniform_model_has_perplexity_equal_to_vocab():
    windows = torch.randint(0, 37, (5, 16))
    r = ev.perplexity(Uniform(37), windows, batch_size=2)
    assert r.ppl == pytest.approx(37, rel=1e-6) and r.tokens == 5 * 15
    r = ev.perplexity(Uniform(37), windows, score_from=8, bos_id=1)
    assert r.ppl == pytest.approx(37, rel=1e-6) and r.tokens == 5 * 7


def test_perplexity_equals_direct_cross_entropy():
    model = tiny_llama()
    windows = torch.randint(0, 50, (3, 20))
    logits = model(windows).logits
    nll = torch.nn.functional.cross_entropy(logits[:, :-1].reshape(-1, 50), windows[:, 1:].reshape(-1))
    assert ev.perplexity(model, windows, batch_size=2).ppl == pytest.approx(math.exp(nll.item()), rel=1e-5)


def test_eval_windows_and_bad_input():
    toks = torch.arange(1000)
    w = ev.eval_windows(toks, 256)
    assert w.shape == (3, 256) and torch.equal(w[1], torch.arange(256, 512))
    with pytest.raises(ValueError, match="windows"):
        ev.eval_windows(toks, 256, 4)
    with pytest.raises(ValueError, match=r"\(n, T\)"):
        ev.perplexity(Uniform(5), torch.zeros(10, dtype=torch.long))


# ---------------------------------------------------------------------------------------------- size, sequential

def test_model_bytes_closed_form():
    model = tiny_llama(layers=2)
    n = llm.n_params(model)
    assert ev.model_bytes(model) == 2 * n
    lin = ev.linear_layers(model)
    assert len(lin) == 2 * 7
    w = sum(m.weight.numel() for m in lin.values())
    groups_pc = sum(m.weight.shape[0] for m in lin.values())
    # 4-bit codes, per output row one fp16 scale and one 4-bit zero
    assert ev.model_bytes(model, bits=4) == 2 * (n - w) + w // 2 + groups_pc * 2 + sum(
        math.ceil(m.weight.shape[0] * 4 / 8) for m in lin.values())
    groups_g16 = w // 16
    assert ev.model_bytes(model, bits=4, group_size=16) == 2 * (n - w) + w // 2 + groups_g16 * 2 + groups_g16 // 2


def test_sequential_feeds_each_layer_what_the_model_does():
    model = tiny_llama()
    calib = torch.randint(0, 50, (4, 12))
    with torch.no_grad():
        states = model(calib, output_hidden_states=True).hidden_states  # embeddings, then after each layer
    seen = ev.sequential(model, calib, lambda i, layer, hidden, kw: hidden.clone())
    assert len(seen) == 3
    for i in range(3):
        torch.testing.assert_close(seen[i], states[i], rtol=1e-5, atol=1e-5)


def test_sequential_sees_the_changes_made_to_earlier_layers():
    model = tiny_llama()
    calib = torch.randint(0, 50, (2, 10))

    def zero_mlp(i, layer, hidden, kw):
        if i == 0:
            layer.mlp.down_proj.weight.data.zero_()
        return hidden.clone()

    seen = ev.sequential(model, calib, zero_mlp)
    with torch.no_grad():
        states = model(calib, output_hidden_states=True).hidden_states  # the model as changed
    torch.testing.assert_close(seen[1], states[1], rtol=1e-5, atol=1e-5)


@pytest.mark.slow
def test_float_model_agrees_with_llama_cpp_perplexity():
    # llama.cpp's llama-perplexity on the same GGUF file and test file: 19.38 (-c 512, 80 chunks, second half of each
    # chunk scored, no BOS for this vocabulary). llama.cpp runs the Q4_1 weights with 8-bit activations and we run their
    # float values, so the claim is agreement within 1 %.
    model, tok = llm.load()
    windows = ev.eval_windows(ev.wikitext2_tokens(tok, "test"), 512, 80)
    assert ev.perplexity(model, windows, score_from=256).ppl == pytest.approx(19.38, rel=0.01)


@pytest.mark.slow
def test_wikitext_tokens_by_lines_equal_the_whole_text_and_are_cached():
    from helpers.data import fetch

    _, tok = llm.load()
    text = (fetch("wikitext-2") / "valid.txt").read_text(encoding="utf-8")
    whole = tok(text, add_special_tokens=False)["input_ids"]
    ev._tokens.cache_clear()
    assert ev.wikitext2_tokens(tok, "valid").tolist() == whole
    ev._tokens.cache_clear()
    assert ev.wikitext2_tokens(tok, "valid").tolist() == whole  # from the file cache this time
