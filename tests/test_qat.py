"""helpers.quant.qat: the STE against PyTorch's fake-quantize gradients, the finite-difference claim about rounding,
static vs dynamic activation ranges, and QAT recovering what PTQ loses on a small synthetic problem."""
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from helpers.quant.affine import QSpec
from helpers.quant.qat import (FakeQuant, QATConv2d, QATLinear, calibrate, fake_quantize_ste, prepare_qat, ptq,
                               round_ste, rounding_gradients, threshold_distance)


def test_round_ste_forward_round_backward_identity():
    x = torch.tensor([-1.5, -0.5, 0.4, 0.5, 1.5, 2.6], requires_grad=True)
    y = round_ste(x)
    assert torch.equal(y, torch.round(x.detach()))                       # half to even, as torch.round
    g = torch.randn(6)
    y.backward(g)
    assert torch.equal(x.grad, g)
    assert torch.equal(torch.func.grad(lambda t: torch.round(t).sum())(x.detach()), torch.zeros(6))  # the true one


@pytest.mark.parametrize("symmetric", [True, False])
def test_ste_equals_torch_fake_quantize_per_tensor(symmetric):
    torch.manual_seed(0)
    x = torch.randn(2000) * 2 + 0.3
    qp = QSpec(bits=4, symmetric=symmetric).calibrate(x * 0.5)           # a narrower range: some values clamp
    a, b = x.clone().requires_grad_(True), x.clone().requires_grad_(True)
    ya = fake_quantize_ste(a, qp)
    yb = torch.fake_quantize_per_tensor_affine(b, float(qp.scale), int(qp.zero_point), qp.qmin, qp.qmax)
    g = torch.randn(2000)
    ya.backward(g)
    yb.backward(g)
    assert torch.equal(ya, yb) and torch.equal(a.grad, b.grad)
    clipped = int((a.grad == 0).sum())
    assert 0 < clipped < 2000                                            # clipped STE: zero outside the range


def test_ste_equals_torch_fake_quantize_per_channel():
    torch.manual_seed(1)
    w = torch.randn(6, 3, 5, 5)
    qp = QSpec(bits=3, symmetric=True, granularity="channel", axis=0).calibrate(w)
    a, b = w.clone().requires_grad_(True), w.clone().requires_grad_(True)
    ya = fake_quantize_ste(a, qp)
    yb = torch.fake_quantize_per_channel_affine(b, qp.scale.reshape(-1), qp.zero_point.reshape(-1), 0,
                                                qp.qmin, qp.qmax)
    g = torch.randn_like(w)
    ya.backward(g)
    yb.backward(g)
    assert torch.equal(ya, yb) and torch.equal(a.grad, b.grad)


def test_rounding_has_zero_or_huge_gradient_and_ste_follows_float():
    torch.manual_seed(2)
    x, w, y = torch.randn(64, 16), torch.randn(8, 16) * 0.3, torch.randn(64, 8)
    spec, eps = QSpec(bits=4, symmetric=True), 1e-4
    qp = spec.calibrate(w)
    s = float(qp.scale)
    # plant 5 weights just below a rounding threshold (k + 1/2) s, less than eps away
    planted = torch.tensor([3, 17, 40, 77, 101])
    flat = w.reshape(-1)
    flat[planted] = (torch.tensor([-2.0, -1.0, 0.0, 1.0, 2.0]) + 0.5) * s - eps / 4
    assert torch.equal(spec.calibrate(w).scale, qp.scale)                 # the range did not move

    def loss(v):
        return ((x @ v.T - y) ** 2).mean()

    r = rounding_gradients(loss, w, spec, eps)
    fd = r["fd"].reshape(-1)
    near = threshold_distance(w, qp).reshape(-1) < eps
    assert torch.equal(fd != 0, near) and int(near.sum()) == 5           # zero unless a threshold is crossed
    for i in planted:                                                    # ... then a jump of one step over 2ε
        up, down = flat.clone(), flat.clone()
        up[i] += eps
        down[i] -= eps
        jump = float(loss(qp.fake_quantize(up.reshape(w.shape))) - loss(qp.fake_quantize(down.reshape(w.shape))))
        assert fd[i] == pytest.approx(jump / (2 * eps), rel=1e-6)
    assert float(fd.abs().max()) > 10 * r["max_abs_float"]              # huge
    assert r["zero_fraction"] == 1 - 5 / 128
    assert r["cos_ste_float"] > 0.9 and abs(r["cos_fd_float"]) < r["cos_ste_float"] / 2


def test_fake_quant_static_observes_min_max_then_freezes():
    torch.manual_seed(3)
    spec = QSpec(bits=8, symmetric=False, signed=False)
    fq = FakeQuant(spec)
    with pytest.raises(RuntimeError):
        fq.freeze()
    batches = [torch.randn(32, 10) * (i + 1) for i in range(3)]
    for b in batches:
        fq(b)
    ref = spec.calibrate(torch.cat(batches))
    assert torch.equal(fq.qparams.scale, ref.scale) and torch.equal(fq.qparams.zero_point, ref.zero_point)
    fq.freeze()
    big = torch.randn(32, 10) * 100
    out = fq(big)
    assert torch.equal(fq.qparams.scale, ref.scale) and torch.equal(out, ref.fake_quantize(big))   # fixed range
    dyn = FakeQuant(spec, dynamic=True)
    assert torch.equal(dyn(big), spec.calibrate(big).fake_quantize(big))                          # per batch


def test_prepare_qat_swaps_layers_and_keeps_weights():
    torch.manual_seed(4)
    model = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1, stride=2), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 4 * 4, 3))
    w_spec = QSpec(bits=4, symmetric=True, granularity="channel", axis=0)
    q = prepare_qat(model, w_spec)
    assert isinstance(q[0], QATConv2d) and isinstance(q[3], QATLinear) and type(model[0]) is nn.Conv2d
    assert torch.equal(q[0].weight, model[0].weight) and q[0].stride == (2, 2) and q[0].padding == (1, 1)
    x = torch.randn(2, 1, 8, 8)
    h = F.relu(F.conv2d(x, w_spec.calibrate(model[0].weight).fake_quantize(model[0].weight.detach()),
                        model[0].bias, stride=2, padding=1))
    ref = F.linear(h.flatten(1), w_spec.calibrate(model[3].weight).fake_quantize(model[3].weight.detach()),
                   model[3].bias)
    assert torch.allclose(q(x), ref, atol=1e-6)
    with pytest.raises(ValueError):
        prepare_qat(nn.Sequential(nn.ReLU()))
    with pytest.raises(TypeError):
        prepare_qat(lambda t: t)
    with pytest.raises(ValueError):
        FakeQuant(QSpec(bits=4, granularity="group", group_size=8))        # static per-group: not observable
    fq = FakeQuant(QSpec(bits=8))
    fq.observing = False
    with pytest.raises(RuntimeError):
        fq(x)                                                            # static, never observed: no range


def test_ptq_static_is_fixed_dynamic_adapts():
    torch.manual_seed(5)
    model = nn.Sequential(nn.Linear(10, 10))
    a_spec = QSpec(bits=4, symmetric=False)
    calib = [torch.randn(64, 10)]
    static, dynamic = ptq(model, act_spec=a_spec, calib=calib), ptq(model, act_spec=a_spec)
    assert not static[0].act_fq.dynamic and dynamic[0].act_fq.dynamic and not static.training
    x = torch.randn(16, 10) * 5                                          # 5x the calibration range
    w_hat = static[0].weight_fq(static[0].weight)
    assert torch.equal(static(x), F.linear(a_spec.calibrate(calib[0]).fake_quantize(x), w_hat, model[0].bias))
    assert torch.equal(dynamic(x), F.linear(a_spec.calibrate(x).fake_quantize(x), w_hat, model[0].bias))


def test_qat_recovers_what_ptq_loses():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(1024, 8, generator=g)
    y = torch.tanh(x @ torch.randn(8, 16, generator=g)) @ (torch.randn(16, 1, generator=g) / 4)   # teacher

    def train(m, steps, lr):
        opt = torch.optim.Adam(m.parameters(), lr=lr)
        sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 1 - s / steps)   # decay: damps STE oscillation
        for _ in range(steps):
            loss = F.mse_loss(m(x), y)
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
        return m

    def loss(m):
        with torch.no_grad():
            return float(F.mse_loss(m(x), y))

    torch.manual_seed(0)
    net = train(nn.Sequential(nn.Linear(8, 64), nn.ReLU(), nn.Linear(64, 1)), 500, 1e-2)
    w_spec, a_spec = QSpec(bits=3, symmetric=True, granularity="channel", axis=0), QSpec(bits=8, symmetric=False)
    l_float, l_ptq = loss(net), loss(ptq(net, w_spec, a_spec, calib=[x]))
    qat = train(calibrate(prepare_qat(net, w_spec, a_spec), [x]).train(), 200, 1e-3)
    l_qat = loss(qat.eval())
    assert l_ptq > 10 * l_float                                          # 3-bit weights: PTQ loses a lot
    assert l_qat - l_float < 0.3 * (l_ptq - l_float)                     # QAT wins back most of it
