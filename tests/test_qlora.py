"""QLoRA helpers: the answer-only label mask, bitsandbytes NF4 == our from-scratch NF4, LoRA's parameter count,
the paged optimizer on CPU, and (slow) a few QLoRA steps on the course LLM."""
import importlib.util

import pytest
import torch

from helpers import llm
from helpers.quant import qlora

TINY = dict(vocab_size=128, hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
            num_key_value_heads=2, max_position_embeddings=64, tie_word_embeddings=True)


@pytest.fixture(scope="module")
def tok():
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(llm.cache_dir())


@pytest.fixture(scope="module")
def tiny_path(tmp_path_factory):
    """A random 2-layer Llama saved to disk, so bitsandbytes can load it in 4 bits as it loads the real one."""
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    model = LlamaForCausalLM(LlamaConfig(**TINY))
    path = tmp_path_factory.mktemp("tiny-llama")
    model.save_pretrained(path)
    return path, model


def test_instruction_data_scores_only_the_answer(tok):
    data = qlora.instruction_data(tok, "train", n=6, seed=1)
    assert data.input_ids.shape == data.labels.shape == data.attention_mask.shape
    for row, (en, de) in enumerate(data.pairs):
        ids, labels, mask = data.input_ids[row], data.labels[row], data.attention_mask[row]
        scored = labels != qlora.IGNORE
        # the scored tokens are exactly the German answer and the end of the assistant's turn
        assert tok.decode(ids[scored]) == de + "<|im_end|>\n"
        assert torch.equal(labels[scored], ids[scored])
        # everything before them is the chat-formatted instruction with the generation prompt
        prompt = tok.apply_chat_template([{"role": "user", "content": f"Translate to German: {en}"}],
                                         add_generation_prompt=True, tokenize=False)
        first = int(scored.nonzero()[0])
        assert tok.decode(ids[:first]) == prompt
        # padding is never attended to nor scored, and only sits at the end
        n = int(mask.sum())
        assert mask[:n].all() and not mask[n:].any() and not scored[n:].any()


def test_instruction_data_splits_and_errors(tok):
    train = qlora.instruction_data(tok, "train", n=4, seed=0)
    test = qlora.instruction_data(tok, "test", n=4, seed=0)
    assert train.pairs != test.pairs
    assert qlora.instruction_data(tok, "train", n=4, seed=0).pairs == train.pairs  # seeded
    with pytest.raises(ValueError, match="split"):
        qlora.instruction_data(tok, "validation", n=4)
    with pytest.raises(ValueError, match="max_len"):
        qlora.instruction_data(tok, "test", n=4, max_len=10)


@pytest.mark.parametrize("double_quant", [False, True])
def test_bitsandbytes_nf4_equals_ours(tiny_path, double_quant):
    # Sizes are multiples of the block (64) as in SmolLM2 (576, 192, 1536). bitsandbytes 0.50.2's CPU
    # dequantize_4bit is wrong when blocks straddle rows (in_features=96: block 2 gets block 1's absmax).
    if importlib.util.find_spec("helpers.quant.nf4") is None:
        pytest.skip("helpers/quant/nf4.py not written yet")
    from helpers.quant import nf4

    path, float_model = tiny_path
    model = qlora.load_4bit(path, double_quant=double_quant)
    for name in ("self_attn.q_proj", "self_attn.k_proj", "mlp.down_proj"):
        linear = model.model.layers[1].get_submodule(name)
        assert type(linear).__name__ == "Linear4bit"
        w = float_model.model.layers[1].get_submodule(name).weight.detach()  # (out, in)
        ours = nf4.dequantize_nf4(nf4.quantize_nf4(w, blocksize=64, double_quant=double_quant))
        assert torch.equal(qlora.dequantized_weight(linear), ours)  # same codebook, blocks, rounding: exact


@pytest.mark.parametrize("r", [1, 8])
def test_lora_trains_r_times_in_plus_out_per_target(tiny_path, r):
    path, _ = tiny_path
    model = qlora.add_lora(qlora.load_4bit(path), r=r)
    c = TINY
    head_dim = c["hidden_size"] // c["num_attention_heads"]
    kv = c["num_key_value_heads"] * head_dim
    h, m = c["hidden_size"], c["intermediate_size"]
    shapes = [(h, h), (h, kv), (h, kv), (h, h), (h, m), (h, m), (m, h)]  # (in, out) of q k v o gate up down
    assert qlora.trainable_parameters(model) == c["num_hidden_layers"] * sum(r * (i + o) for i, o in shapes)
    assert all(("lora_" in n) == p.requires_grad for n, p in model.named_parameters())
    # B = 0 at the start: the adapted model computes exactly what the 4-bit base does
    x = torch.randint(0, c["vocab_size"], (2, 8))
    with torch.no_grad(), model.disable_adapter():
        base = model(x).logits
    with torch.no_grad():
        assert torch.equal(model(x).logits, base)


def test_paged_adamw_runs_on_cpu_like_adamw():
    diff, notes = qlora.paged_adamw_check(steps=3)
    assert diff < 1e-5  # same update rule, float32 rounding apart
    assert any("not supported on CPU" in n for n in notes)  # it says it falls back to plain (non-paged) state
    assert "runs on CPU" in qlora.paged_adamw_status()


def test_bad_arguments(tiny_path, tok):
    path, _ = tiny_path
    with pytest.raises(TypeError, match="compute_dtype"):
        qlora.load_4bit(path, compute_dtype=torch.int8)
    with pytest.raises(ValueError, match="add_lora"):
        qlora.finetune(qlora.load_4bit(path), qlora.instruction_data(tok, "train", n=2), steps=1)


@pytest.mark.slow
def test_qlora_steps_on_the_llm_fit_the_answers(tok):
    """Six AdamW steps on four Multi30k pairs: the 4-bit model with adapters fits their answers (ppl falls more
    than 4×); the base weights stay untouched."""
    data = qlora.instruction_data(tok, "train", n=4, seed=0)
    model = qlora.add_lora(qlora.load_4bit())
    frozen = model.base_model.model.model.layers[0].self_attn.q_proj.base_layer.weight.data.clone()
    before = qlora.answer_perplexity(model, data)
    result = qlora.finetune(model, data, steps=6, lr=1e-3, batch_size=4, warmup=1, max_grad_norm=None)
    after = qlora.answer_perplexity(model, data)
    assert len(result.losses) == 6 and result.seconds > 0
    assert after < before / 4, (before, after)
    assert torch.equal(model.base_model.model.model.layers[0].self_attn.q_proj.base_layer.weight.data, frozen)


def _lora_grads(model, x):
    model.train()
    model.zero_grad()
    model(x).logits.square().mean().backward()
    model.eval()
    return [p.grad.clone() for n, p in model.named_parameters() if "lora_A" in n]


def test_evaluating_does_not_change_training(tiny_path, tok):
    """bitsandbytes' CPU inference repacking is off by default: the same gradients before and after an eval pass.
    With it on (and an AVX512-BF16 CPU that triggers it), finetune refuses the model."""
    path, _ = tiny_path
    x = torch.randint(0, TINY["vocab_size"], (2, 8))
    model = qlora.add_lora(qlora.load_4bit(path))
    for p in model.parameters():  # B = 0 makes every A gradient 0: give B values so A's gradients mean something
        if p.requires_grad and p.dim() == 2 and not p.any():
            torch.nn.init.normal_(p, std=0.02)
    before = _lora_grads(model, x)
    with torch.inference_mode():
        model(x)
    for a, b in zip(before, _lora_grads(model, x)):
        assert torch.equal(a, b)

    fast = qlora.add_lora(qlora.load_4bit(path, cpu_inference_kernel=True))
    with torch.inference_mode():
        fast(x)
    if not any(getattr(m.weight.quant_state, "packing_format_for_cpu", False)
               for m in fast.modules() if type(m).__name__ == "Linear4bit"):
        pytest.skip("this CPU has no AVX512-BF16: bitsandbytes does not repack")
    with pytest.raises(ValueError, match="repacked"):
        qlora.finetune(fast, qlora.instruction_data(tok, "train", n=2), steps=1)
