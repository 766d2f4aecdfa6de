"""helpers/lm_efficiency.py: Lecture 9's efficiency ladder and the two changes that must not change the maths."""
import pytest
import torch

from helpers import lm_efficiency as eff
from helpers.data import DataError
from helpers.models.gpt import GPT, GPTConfig

TINY = GPTConfig(block_size=32, vocab_size=eff.GPT2_VOCAB, n_layer=2, n_head=2, n_embd=32)


@pytest.fixture(scope="module")
def tokens():
    """GPT-2 ids of tiny Shakespeare (skips where the dataset is unavailable offline)."""
    try:
        return eff.shakespeare_gpt2_tokens()
    except DataError as exc:
        pytest.skip(f"tiny Shakespeare unavailable: {exc}")


def test_padded_vocab():
    assert eff.padded_vocab(50257) == 50304 == 64 * 786  # Karpathy's "nice number"
    assert eff.padded_vocab(50304) == 50304  # already a multiple: unchanged
    assert eff.padded_vocab(1) == 64 and eff.padded_vocab(65) == 128
    assert eff.padded_vocab(50257, multiple=128) == 50304 and eff.padded_vocab(50257, multiple=8) == 50264
    with pytest.raises(ValueError):
        eff.padded_vocab(0)


def test_shakespeare_tokens_are_gpt2_ids(tokens):
    assert tokens.dtype == torch.long and tokens.dim() == 1
    assert 250_000 < len(tokens) < 400_000  # 90% of ~338k GPT-2 tokens
    assert 0 <= int(tokens.min()) and int(tokens.max()) < eff.GPT2_VOCAB


def test_make_adamw_decays_matrices_only():
    model = GPT(GPTConfig(**{**TINY.__dict__, "vocab_size": 64}))
    for impl in ("for-loop", "foreach", "fused"):
        opt = eff.make_adamw(model, lr=1e-3, impl=impl)
        decayed, plain = opt.param_groups
        assert all(p.dim() >= 2 for p in decayed["params"]) and decayed["weight_decay"] == 0.1
        assert all(p.dim() < 2 for p in plain["params"]) and plain["weight_decay"] == 0.0
        assert sum(len(g["params"]) for g in opt.param_groups) == len(list(model.parameters()))
    assert eff.make_adamw(model, impl="fused").defaults["fused"] is True
    assert eff.make_adamw(model, impl="for-loop").defaults["foreach"] is False
    with pytest.raises(ValueError, match="impl"):
        eff.make_adamw(model, impl="magic")


def test_saved_activation_bytes_counts_activations_not_weights():
    lin = torch.nn.Linear(16, 8)
    x = torch.randn(5, 16)
    out = []
    with eff.saved_activation_bytes(lin, out):
        lin(x).sum().backward()  # Linear saves its input (for dW) and its weight (a parameter: not counted)
    assert out == [x.numel() * 4]


def test_tf32_context_restores_precision():
    before = torch.get_float32_matmul_precision()
    with eff.tf32_matmuls(True):
        assert torch.get_float32_matmul_precision() == "high"
    assert torch.get_float32_matmul_precision() == before


def test_grad_accumulation_equals_one_batch(tokens):
    diff = eff.check_grad_accumulation(micro=4, device="cpu")
    assert diff <= 1e-5  # fp32 rounding only: the mean of equal-size micro-batch means is the batch mean
    forgot = eff.check_grad_accumulation(micro=4, device="cpu", normalize=False)
    assert forgot > 1e3 * max(diff, 1e-9)  # without loss / micro the gradient is 4x too large


def test_grad_accumulation_refuses_dropout_and_ragged_batches(tokens):
    with pytest.raises(ValueError, match="dropout"):
        eff.check_grad_accumulation(GPTConfig(**{**TINY.__dict__, "dropout": 0.1}))
    with pytest.raises(ValueError, match="divisible"):
        eff.check_grad_accumulation(TINY, micro=3, batch_size=8)


def test_fused_adamw_matches_for_loop(tokens):
    assert eff.check_fused_adamw(steps=3, device="cpu") <= 1e-6


def test_ladder_rows_on_cpu(tokens):
    rows = eff.efficiency_ladder(steps=1, device="cpu", config=TINY, batch_size=4, accum=2, progress=False)
    changes = [r["change"] for r in rows]
    assert changes == ["baseline: fp32, attention spelled out", "vocab padded 50257 -> 50304", "fused AdamW",
                       "flash attention", "TF32 matmuls", "bf16 autocast", "torch.compile",
                       "gradient accumulation x2"]
    by = dict(zip(changes, rows))
    for name in ("TF32 matmuls", "torch.compile"):  # CUDA-only / opt-in: visible rows, not silently dropped
        assert by[name]["tokens_per_s"] is None and by[name]["speedup"] is None
        assert by[name]["note"].startswith("skipped:")
    assert "needs CUDA" in by["TF32 matmuls"]["note"]
    measured = [r for r in rows if r["tokens_per_s"] is not None]
    assert len(measured) == 5 + eff.fused_adamw_supported("cpu")
    assert all(r["tokens_per_s"] > 0 and r["speedup"] > 0 and len(r["steps_ms"]) == 1 for r in measured)
    assert rows[0]["speedup"] == 1.0
    # memory: deterministic, so exact claims. SDPA stores no (B, nh, T, T) maps; half the rows, ~half the activations
    assert by["flash attention"]["activation_mb"] < by["fused AdamW"]["activation_mb"]
    ratio = by["gradient accumulation x2"]["activation_mb"] / by["bf16 autocast"]["activation_mb"]
    assert 0.5 < ratio < 0.6  # half, plus the bf16 weight copies autocast keeps once per micro-batch
    assert "optimizer step alone" in by["fused AdamW"]["note"] and "attention alone" in by["flash attention"]["note"]
    header, cells = eff.ladder_table(rows)
    assert len(header) == len(cells[0]) and cells[4][1] == "—"


@pytest.mark.slow
def test_ladder_quick_sizes(tokens):
    rows = eff.efficiency_ladder(device="cpu", progress=False)
    assert rows[0]["note"].startswith("fp32") and len(rows) == 8
    assert all(r["tokens_per_s"] > 0 for r in rows if r["tokens_per_s"] is not None)
