"""helpers.quant.nf4 against bitsandbytes 0.50 on CPU (codes, absmax, dequantized values bit for bit) and the
QLoRA paper's closed forms (bits per parameter)."""
import pytest
import torch

bnbf = pytest.importorskip("bitsandbytes.functional")

from helpers.quant.nf4 import (NF4Tensor, bits_per_parameter, dequantize_blockwise_8bit, dequantize_nf4,  # noqa: E402
                               dynamic_map, nf4_codebook, quantize_blockwise_8bit, quantize_nf4)


def bnb_nf4(w, double_quant):
    packed, state = bnbf.quantize_4bit(w, blocksize=64, quant_type="nf4", compress_statistics=double_quant)
    return packed, state, bnbf.dequantize_4bit(packed, state)


def assert_same_as_bnb(w, double_quant):
    packed, state, deq = bnb_nf4(w, double_quant)
    q = quantize_nf4(w, blocksize=64, double_quant=double_quant)
    assert torch.equal(q.packed, packed.reshape(-1))
    if double_quant:
        assert torch.equal(q.absmax_codes, state.absmax)                 # bnb keeps the 8-bit codes in .absmax
        assert torch.equal(q.absmax_scales, state.state2.absmax)
        assert torch.equal(q.absmax_offset, state.offset)
        assert torch.equal(dynamic_map(), state.state2.code)
    else:
        assert torch.equal(q.absmax, state.absmax)
    mine = dequantize_nf4(q)
    assert mine.shape == w.shape and mine.dtype == w.dtype
    assert torch.equal(mine.reshape(-1), deq.reshape(-1))               # bnb returns 1-d inputs as (1, n)


def test_codebook_equals_bitsandbytes():
    code = nf4_codebook()
    assert code.dtype == torch.float32 and code.shape == (16,)
    assert torch.equal(code, bnbf.get_4bit_type("nf4", device="cpu"))
    assert code[7] == 0 and code[0] == -1 and code[-1] == 1 and bool((code.diff() > 0).all())


def test_codebook_is_normal_quantiles():
    # before normalising, the positive codes are Φ⁻¹ at 8 evenly spaced probabilities from the offset to 1/2
    from scipy.stats import norm
    p = torch.linspace(0.9677083, 0.5, 9)[:-1].double().numpy()
    expected = torch.tensor(norm.ppf(p)[::-1].copy(), dtype=torch.float64)
    assert torch.allclose(nf4_codebook()[8:].double(), (expected / expected.max()), atol=1e-7)


def test_dynamic_map_equals_bitsandbytes():
    m = dynamic_map()
    assert m.shape == (256,) and torch.equal(m, bnbf.create_dynamic_map())
    assert m[-1] == 1 and m[127] == 0 and float(m[128]) == pytest.approx(0.55e-6, rel=1e-6)  # smallest: 10⁻⁶·0.55


@pytest.mark.parametrize("double_quant", [False, True])
@pytest.mark.parametrize("shape", [(128, 64), (256, 320), (33, 100), (3, 10), (5, 1000, 8)])
def test_bit_exact_vs_bitsandbytes(shape, double_quant):
    torch.manual_seed(sum(shape))
    assert_same_as_bnb(torch.randn(shape) * 0.02, double_quant)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_bit_exact_half_precision(dtype):
    torch.manual_seed(1)
    assert_same_as_bnb((torch.randn(96, 64) * 0.05).to(dtype), True)


def test_odd_count_pads_with_code_of_zero():
    torch.manual_seed(2)
    w = torch.randn(7, 9)                                                # 63 values: one partial block, odd
    assert_same_as_bnb(w, False)
    q = quantize_nf4(w)
    assert q.packed.numel() == 32 and int(q.packed[-1] & 0xF) == 7        # the spare nibble holds code(0) = 7


def test_ties_go_to_lower_code_and_zeros():
    code = nf4_codebook()
    mids = (code[:-1] + code[1:]) / 2
    w = torch.cat([mids, torch.tensor([1.0]), -mids]).reshape(1, -1)      # absmax 1: values are exactly the midpoints
    w = torch.cat([w, torch.zeros(1, 64 - w.shape[1])], dim=1)
    assert_same_as_bnb(w, False)
    assert torch.equal(quantize_nf4(w).codes()[:15], torch.arange(15))   # midpoint i → code i, not i + 1
    for dq in (False, True):
        assert_same_as_bnb(torch.zeros(4, 64), dq)                       # zero blocks (absmax 0) decode to 0


def test_8bit_blockwise_equals_bitsandbytes_lookup_table():
    # bnb's CPU kernel snaps to a 65,536-point grid before choosing a code; exact nearest differs near midpoints
    torch.manual_seed(3)
    x = torch.randn(256 * 200) * torch.rand(256 * 200)
    code = dynamic_map()
    qb, state = bnbf.quantize_blockwise(x, code=code.clone(), blocksize=256)
    q, absmax = quantize_blockwise_8bit(x, code, 256)
    assert torch.equal(q, qb) and torch.equal(absmax, state.absmax)
    assert torch.equal(dequantize_blockwise_8bit(q, absmax, code, 256), bnbf.dequantize_blockwise(qb, state))
    exact = torch.bucketize(x.reshape(-1, 256) * (1 / absmax[:, None]), (code[:-1] + code[1:]) / 2).reshape(-1)
    assert 0 < int((exact != q.long()).sum()) < x.numel() // 100         # the grid matters, but rarely
    v = x.reshape(-1, 256) * (1 / absmax[:, None])
    err_grid, err_exact = (code[q.long()] - v.reshape(-1)).abs(), (code[exact] - v.reshape(-1)).abs()
    assert float((err_grid - err_exact).max()) <= 2 / 65535 + 1e-7       # at most twice the grid's half-step worse


def test_bits_per_parameter_closed_form_and_measured():
    assert bits_per_parameter(64) == 4.5
    assert bits_per_parameter(64, double_quant=True) == pytest.approx(4.127, abs=5e-4)   # QLoRA §3
    assert bits_per_parameter(64, True, 256) == 4 + 8 / 64 + 32 / (64 * 256)
    w = torch.randn(256, 512)                                             # n divisible by 64 · 256
    n = w.numel()
    q, qd = quantize_nf4(w), quantize_nf4(w, double_quant=True)
    assert q.bits_per_parameter() == bits_per_parameter(64)
    assert qd.bits_per_parameter() == pytest.approx(bits_per_parameter(64, True) + 32 / n, rel=1e-12)  # + offset
    assert q.nbytes == n // 2 + 4 * n // 64


def test_dequantized_error_is_small():
    torch.manual_seed(4)
    w = torch.randn(64, 64)
    q, qd = quantize_nf4(w), quantize_nf4(w, double_quant=True)
    assert isinstance(q, NF4Tensor)
    err = (dequantize_nf4(q) - w).abs() / q.block_absmax().repeat_interleave(64).reshape(64, 64)
    assert float(err.max()) <= float((nf4_codebook().diff().max()) / 2) + 1e-6   # at most half the widest gap
    rel = (qd.block_absmax() - q.absmax).abs() / q.absmax
    assert float(rel.max()) < 0.02                                        # 8-bit absmax: ~1% error


def test_bad_input():
    with pytest.raises(TypeError):
        quantize_nf4(torch.arange(64))
    with pytest.raises(TypeError):
        quantize_nf4([0.1] * 64)
    with pytest.raises(ValueError):
        quantize_nf4(torch.empty(0))
    with pytest.raises(ValueError):
        quantize_nf4(torch.tensor([1.0, float("nan")]))
    with pytest.raises(ValueError):
        quantize_nf4(torch.randn(64), blocksize=0)
    with pytest.raises(ValueError):
        nf4_codebook(offset=1.2)
    with pytest.raises(TypeError):
        dequantize_nf4(torch.zeros(4, dtype=torch.uint8))
