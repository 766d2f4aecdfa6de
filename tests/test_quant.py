"""helpers.quant against closed forms and against PyTorch (fake_quantize_*_affine, observers, float8/16 casts)."""
import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from helpers.quant import (BF16, E4M3, E5M2, FP16, IntegerCNN, QSpec, decode, encode, int_conv2d, int_linear,
                           int_maxpool2d, kmeans_codebook, mse, pack_int4, plan_of, qrange,
                           quantize_multiplier, representable, requantize, run_float, scale_zero_point,
                           sqnr_db, uniform_noise_mse, unpack_int4)
from helpers.quant.formats import TORCH_DTYPES

# --- affine -------------------------------------------------------------------------------------------


def test_qrange():
    assert qrange(8, True) == (-128, 127) and qrange(8, False) == (0, 255)
    assert qrange(4, True) == (-8, 7) and qrange(2, False) == (0, 3)
    for bad in (1, 9, 8.0):
        with pytest.raises(ValueError):
            qrange(bad, True)


@pytest.mark.parametrize("symmetric", [True, False])
@pytest.mark.parametrize("signed", [True, False])
def test_scale_zero_point_matches_torch_observer(symmetric, signed):
    x = torch.randn(1000) * 3 + 0.5
    dtype = torch.qint8 if signed else torch.quint8
    scheme = torch.per_tensor_symmetric if symmetric else torch.per_tensor_affine
    obs = torch.ao.quantization.MinMaxObserver(dtype=dtype, qscheme=scheme)
    obs(x)
    s_ref, z_ref = obs.calculate_qparams()
    s, z = scale_zero_point(x.min(), x.max(), 8, symmetric, signed)
    assert torch.allclose(s, s_ref[0], rtol=1e-6) and int(z) == int(z_ref[0])


def test_range_contains_zero_and_zero_is_exact():
    x = torch.rand(100) + 1.0                      # all positive: the range is widened to [0, max]
    qp = QSpec(bits=8, symmetric=False).calibrate(x)
    assert float(qp.fake_quantize(torch.zeros(1))) == 0.0
    assert int(qp.zero_point) == -128


@pytest.mark.parametrize("symmetric", [True, False])
@pytest.mark.parametrize("gran", ["tensor", "channel"])
def test_fake_quantize_matches_torch(symmetric, gran):
    torch.manual_seed(0)
    x = torch.randn(16, 3, 5, 5) * torch.linspace(0.1, 3, 16).view(-1, 1, 1, 1)
    qp = QSpec(bits=8, symmetric=symmetric, granularity=gran, axis=0).calibrate(x)
    if gran == "tensor":
        ref = torch.fake_quantize_per_tensor_affine(x, float(qp.scale), int(qp.zero_point), -128, 127)
    else:
        ref = torch.fake_quantize_per_channel_affine(x, qp.scale.reshape(-1), qp.zero_point.reshape(-1), 0, -128, 127)
    assert torch.equal(qp.fake_quantize(x), ref)


def test_per_channel_any_axis_and_per_group():
    x = torch.randn(4, 6, 8)
    qp = QSpec(granularity="channel", axis=2).calibrate(x)
    assert qp.scale.shape == (1, 1, 8)
    g = QSpec(bits=4, symmetric=True, granularity="group", axis=-1, group_size=4).calibrate(x)
    assert g.scale.shape == (4, 6, 2)
    # each group's scale is its own max|x| / 7.5
    assert torch.allclose(g.scale, x.reshape(4, 6, 2, 4).abs().amax(-1) / 7.5)
    # finer granularity never increases the error on the same data (min/max ranges nest)
    errs = [mse(x, QSpec(bits=4, granularity=k, axis=-1, group_size=4).calibrate(x).fake_quantize(x))
            for k in ("tensor", "channel", "group")]
    assert errs[0] >= errs[1] >= errs[2]


def test_bad_inputs_raise():
    x = torch.randn(4, 6)
    with pytest.raises(ValueError, match="bits"):
        QSpec(bits=9)
    with pytest.raises(ValueError, match="group_size"):
        QSpec(granularity="group", group_size=4, axis=1).calibrate(x)
    with pytest.raises(ValueError, match="zero range"):
        QSpec().calibrate(torch.zeros(5))
    with pytest.raises(ValueError, match="NaN or inf"):
        QSpec().calibrate(torch.tensor([1.0, float("nan")]))
    with pytest.raises(ValueError, match="NaN or inf"):
        QSpec().calibrate(torch.tensor([1.0, float("inf")]))
    with pytest.raises(ValueError, match="granularity"):
        QSpec(granularity="row")
    with pytest.raises(ValueError, match="method"):
        QSpec(method="kl")


@settings(max_examples=60, deadline=None)
@given(bits=st.integers(2, 8), symmetric=st.booleans(), signed=st.booleans(),
       lo=st.floats(-100, 0, allow_nan=False), width=st.floats(1e-3, 200, allow_nan=False),
       seed=st.integers(0, 2 ** 16))
def test_roundtrip_within_half_step(bits, symmetric, signed, lo, width, seed):
    """Property: dequantize(quantize(x)) is within Δ/2 of x for every x inside the representable range."""
    hi = lo + width
    s, z = scale_zero_point(lo, hi, bits, symmetric, signed)
    from helpers.quant import QParams
    qp = QParams(s, z, bits, signed, symmetric)
    qmin, qmax = qrange(bits, signed)
    rep_lo, rep_hi = float(s) * (qmin - int(z)), float(s) * (qmax - int(z))
    g = torch.Generator().manual_seed(seed)
    x = rep_lo + (rep_hi - rep_lo) * torch.rand(500, generator=g)
    err = (qp.dequantize(qp.quantize(x)) - x).abs()
    assert float(err.max()) <= float(s) / 2 * (1 + 1e-5) + 1e-7


def test_uniform_noise_closed_form():
    """MSE of rounding a smooth density finely ≈ Δ²/12 (within 2% at 8 bits on a uniform signal)."""
    torch.manual_seed(0)
    x = torch.rand(200_000) * 2 - 1
    qp = QSpec(bits=8, symmetric=True).calibrate(x)
    assert mse(x, qp.fake_quantize(x)) == pytest.approx(uniform_noise_mse(qp.scale), rel=0.02)
    # SQNR of a full-scale uniform signal: 6.02 b dB (E[x²] = 1/3, Δ = 2/2^b)
    assert sqnr_db(x, qp.fake_quantize(x)) == pytest.approx(6.02 * 8, abs=0.2)


def test_mse_method_not_worse_than_minmax():
    torch.manual_seed(0)
    x = torch.distributions.StudentT(2.0).sample((5000,))
    e_minmax = mse(x, QSpec(bits=4).calibrate(x).fake_quantize(x))
    e_search = mse(x, QSpec(bits=4, method="mse").calibrate(x).fake_quantize(x))
    e_pct = mse(x, QSpec(bits=4, method="percentile", percentile=99.9).calibrate(x).fake_quantize(x))
    assert e_search <= e_minmax and e_pct < e_minmax


# --- formats --------------------------------------------------------------------------------------------


def _torch_codes(x: torch.Tensor, fmt) -> torch.Tensor:
    y = x.to(TORCH_DTYPES[fmt.name])
    return y.view(torch.uint8).long() if fmt.bits == 8 else y.view(torch.int16).long() & 0xFFFF


def _torch_values(codes: torch.Tensor, fmt) -> torch.Tensor:
    if fmt.bits == 8:
        return codes.to(torch.uint8).view(TORCH_DTYPES[fmt.name]).float()
    return codes.to(torch.int32).to(torch.int16).view(TORCH_DTYPES[fmt.name]).float()


@pytest.mark.parametrize("fmt", [E4M3, E5M2, FP16, BF16], ids=lambda f: f.name)
def test_decode_every_code_equals_torch(fmt):
    codes = torch.arange(1 << fmt.bits)
    ours, ref = decode(codes, fmt), _torch_values(codes, fmt)
    assert torch.equal(torch.isnan(ours), torch.isnan(ref))
    ok = ~torch.isnan(ref)
    assert torch.equal(ours[ok], ref[ok])
    assert torch.equal(torch.signbit(ours[ok]), torch.signbit(ref[ok]))   # -0 decodes to -0


@pytest.mark.parametrize("fmt", [E4M3, E5M2], ids=lambda f: f.name)
def test_fp8_encode_bit_exact(fmt):
    """Every code's value, random normals, subnormals, ties, overflow, ±inf and ±NaN: same byte as torch."""
    g = torch.Generator().manual_seed(0)
    all_vals = _torch_values(torch.arange(256), fmt)
    vals = all_vals[torch.isfinite(all_vals)]
    mids = (vals.sort().values[1:] + vals.sort().values[:-1]) / 2        # exact ties between neighbours
    x = torch.cat([
        all_vals, mids,
        torch.randn(50_000, generator=g) * fmt.max / 4,
        torch.randn(50_000, generator=g) * fmt.min_normal * 3,        # subnormal range
        (torch.rand(10_000, generator=g) * 3 + 0.9) * fmt.max,        # overflow
        torch.tensor([0.0, -0.0, fmt.min_subnormal / 2, fmt.min_subnormal * 0.51, 1e30, -1e30,
                      float("inf"), float("-inf"), float("nan"), -float("nan"), 1e-45]),
    ])
    assert torch.equal(encode(x, fmt), _torch_codes(x, fmt))


@pytest.mark.parametrize("fmt", [FP16, BF16], ids=lambda f: f.name)
def test_16bit_encode_equals_torch(fmt):
    g = torch.Generator().manual_seed(1)
    x = torch.cat([torch.randn(100_000, generator=g) * 1000, torch.randn(10_000, generator=g) * fmt.min_normal,
                   torch.tensor([fmt.max * 1.01, 1e38, -3e38, float("inf"), float("-inf"), 0.0, -0.0])])
    assert torch.equal(encode(x, fmt), _torch_codes(x, fmt))
    assert bool(torch.isnan(decode(encode(torch.tensor([float("nan")]), fmt), fmt)).all())


@settings(max_examples=100, deadline=None)
@given(v=st.floats(width=32, allow_nan=True, allow_infinity=True))
def test_fp8_encode_property(v):
    x = torch.tensor([v], dtype=torch.float32)
    for fmt in (E4M3, E5M2):
        assert torch.equal(encode(x, fmt), _torch_codes(x, fmt))


def test_format_constants():
    assert E4M3.max == 448 and E5M2.max == 57344 and FP16.max == 65504
    assert E4M3.min_subnormal == 2 ** -9 and E5M2.min_subnormal == 2 ** -16
    assert len(representable(E4M3)) == 253 and len(representable(E5M2)) == 247  # 256 - NaNs - infs - (-0)


@settings(max_examples=60, deadline=None)
@given(signed=st.booleans(), n=st.integers(0, 40), rows=st.integers(1, 3), seed=st.integers(0, 2 ** 16))
def test_int4_pack_roundtrip(signed, n, rows, seed):
    lo, hi = (-8, 8) if signed else (0, 16)
    g = torch.Generator().manual_seed(seed)
    q = torch.randint(lo, hi, (rows, 2 * n), generator=g)
    p = pack_int4(q, signed)
    assert p.dtype == torch.uint8 and p.shape == (rows, n)
    assert torch.equal(unpack_int4(p, signed).long(), q)


def test_int4_pack_layout_and_errors():
    assert pack_int4(torch.tensor([1, 2])).tolist() == [0x21]
    assert pack_int4(torch.tensor([-1, -8])).tolist() == [0x8F]
    with pytest.raises(ValueError):
        pack_int4(torch.tensor([8, 0]))
    with pytest.raises(ValueError):
        pack_int4(torch.tensor([1, 2, 3]))


# --- codebook -------------------------------------------------------------------------------------------


def test_kmeans_codebook_beats_uniform_on_gaussian():
    torch.manual_seed(0)
    x = torch.randn(20_000)
    cb = kmeans_codebook(x, bits=3)
    assert len(cb.centroids) == 8 and bool((cb.centroids[1:] > cb.centroids[:-1]).all())
    e_cb = mse(x, cb.fake_quantize(x))
    e_uni = mse(x, QSpec(bits=3).calibrate(x).fake_quantize(x))
    assert e_cb < e_uni
    # Lloyd–Max 3-bit quantizer of N(0,1): MSE 0.03454 (Max, 1960, Table I)
    assert e_cb == pytest.approx(0.03454, rel=0.05)


# --- integer arithmetic ---------------------------------------------------------------------------------


@settings(max_examples=200, deadline=None)
@given(m=st.floats(1e-6, 0.999, allow_nan=False))
def test_quantize_multiplier(m):
    m0, shift = quantize_multiplier(m)
    assert 2 ** 30 <= m0 < 2 ** 31
    assert abs(m0 * 2.0 ** (-31 - shift) - m) <= m * 2 ** -30


def test_requantize_equals_rounded_product():
    g = torch.Generator().manual_seed(0)
    acc = torch.randint(-2 ** 20, 2 ** 20, (10_000,), generator=g, dtype=torch.int32)
    m = 0.00123456
    m0, shift = quantize_multiplier(m)
    out = requantize(acc, m0, shift, 3, -1000, 1000)
    ref = torch.clamp(torch.floor(acc.double() * m + 0.5) + 3, -1000, 1000)
    assert int((out.double() - ref).abs().max()) <= 1 and float((out.double() != ref).float().mean()) < 1e-3


def test_int_kernels_equal_float_kernels_on_integers():
    g = torch.Generator().manual_seed(0)
    x = torch.randint(0, 256, (2, 3, 9, 9), generator=g)
    w = torch.randint(-127, 128, (4, 3, 3, 3), generator=g)
    b = torch.randint(-1000, 1000, (4,), generator=g)
    acc = int_conv2d(x, 7, w, b)
    ref = torch.nn.functional.conv2d((x - 7).double(), w.double(), b.double())
    assert acc.dtype == torch.int32 and torch.equal(acc.double(), ref)
    xl = torch.randint(0, 256, (5, 20), generator=g)
    wl = torch.randint(-127, 128, (6, 20), generator=g)
    assert torch.equal(int_linear(xl, 128, wl).double(), (xl - 128).double() @ wl.double().T)
    assert torch.equal(int_maxpool2d(acc[:, :, :6, :6]), torch.nn.functional.max_pool2d(acc[:, :, :6, :6].double(), 2).int())


@pytest.mark.parametrize("gran", ["tensor", "channel"])
def test_integer_cnn_matches_fake_quant(gran):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU(), nn.MaxPool2d(2), nn.Conv2d(4, 6, 3), nn.ReLU(),
                          nn.Flatten(), nn.Linear(6 * 3 * 3, 10), nn.ReLU(), nn.Linear(10, 5)).eval()
    x = torch.round(torch.rand(64, 1, 10, 10) * 255) / 255
    plan = plan_of(model, pad=1)
    with torch.no_grad():
        assert torch.allclose(run_float(plan, x), model(torch.nn.functional.pad(x, (1, 1, 1, 1))), atol=1e-6)
    net = IntegerCNN.from_float(model, x[:32], QSpec(bits=8, symmetric=True, granularity=gran), pad=1)
    q = net.forward_int(net.quantize_input(x))
    assert q.dtype == torch.int32
    assert torch.equal(q, net.forward_int(net.quantize_input(x), fuse_pool=False))
    step = float(net.layers[-1].y.scale)
    diff = (net.logits(x) - net.fake_quant_forward(x)).abs().max()
    assert float(diff) <= step * 1.0001
    sizes = net.weight_bytes()
    assert sizes["weights"] == sum(p.numel() for n, p in model.named_parameters() if n.endswith("weight"))


def test_error_metrics():
    x = torch.tensor([1.0, -1.0])
    assert mse(x, x) == 0 and math.isinf(sqnr_db(x, x))
    assert sqnr_db(x, x * 0.9) == pytest.approx(20.0, abs=1e-5)  # float32 0.9
    assert np.isclose(uniform_noise_mse(0.5), 0.25 / 12)
