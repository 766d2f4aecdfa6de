"""helpers.nn: every layer's backward vs finite differences, losses and optimizers vs PyTorch, bad inputs."""
import numpy as np
import pytest
import torch

from helpers.nn import (SGD, ActivationLayer, Adam, BatchNormLayer, CrossEntropyLoss, DropoutLayer, HingeLoss,
                        LayerNormLayer, LinearLayer, MSELoss, Network, NoiseLayer, RMSprop, activation, activation_grad,
                        clip_grad_norm, distribution_shift, grad_check, gradient_change, layer_input_stats,
                        loss_grad_check, mlp, noisy_bn_mlp)
from helpers.nn.torch_twin import to_torch

RNG = np.random.default_rng(0)


def x64(*shape):
    return RNG.standard_normal(shape)


LAYERS = {
    "linear": lambda: LinearLayer(5, 4, np.random.default_rng(1)),
    **{f"act_{a}": (lambda a=a: ActivationLayer(a)) for a in ["relu", "sigmoid", "tanh", "leaky_relu", "gelu"]},
    "dropout": lambda: DropoutLayer(0.3, np.random.default_rng(2)),
    "batchnorm": lambda: BatchNormLayer(5),
    "layernorm": lambda: LayerNormLayer(5),
    # (no batch norm inside: a bias right before BN has an exactly-zero gradient, so a relative error is noise)
    "network": lambda: mlp([5, 6, 4, 3], act="tanh", dropout=0.2, rng=np.random.default_rng(3)),
}


@pytest.mark.parametrize("name", LAYERS)
def test_grad_check(name):
    layer = LAYERS[name]()
    if isinstance(layer, (BatchNormLayer, LayerNormLayer)):
        layer.params["gamma"][:] = RNG.uniform(0.5, 1.5, 5)   # non-trivial scale and shift
        layer.params["beta"][:] = RNG.standard_normal(5)
    errs = grad_check(layer, x64(7, 5))
    assert max(errs.values()) < 1e-6, errs


def test_batchnorm_eval_grad_check():
    bn = BatchNormLayer(5)
    bn.forward(x64(8, 5).astype(np.float32) * 3 + 1)   # move the running statistics
    bn.training = False
    errs = grad_check(bn, x64(7, 5))
    assert max(errs.values()) < 1e-6, errs


@pytest.mark.parametrize("loss", [MSELoss(), CrossEntropyLoss(), HingeLoss()], ids=type)
def test_loss_grad_check(loss):
    pred = x64(6, 4)
    target = pred + x64(6, 4) if isinstance(loss, MSELoss) else RNG.integers(0, 4, 6)
    assert loss_grad_check(loss, pred, target) < 1e-6


def test_losses_match_torch():
    s, y, t = x64(8, 5), RNG.integers(0, 5, 8), x64(8, 5)
    S, Y = torch.tensor(s, requires_grad=True), torch.tensor(y)
    for ours, ref, target, ttarget in [(CrossEntropyLoss(), torch.nn.CrossEntropyLoss(), y, Y),
                                       (HingeLoss(), torch.nn.MultiMarginLoss(), y, Y),
                                       (MSELoss(), torch.nn.MSELoss(), t, torch.tensor(t))]:
        value = ours.forward(s, target)
        S.grad = None
        r = ref(S, ttarget)
        r.backward()
        assert abs(value - r.item()) < 1e-10
        np.testing.assert_allclose(ours.backward(), S.grad.numpy(), atol=1e-12)


def test_activations_match_torch():
    x = np.linspace(-6, 6, 101)
    fns = {"relu": torch.relu, "sigmoid": torch.sigmoid, "tanh": torch.tanh,
           "leaky_relu": torch.nn.functional.leaky_relu, "gelu": torch.nn.functional.gelu}
    for name, fn in fns.items():
        X = torch.tensor(x, requires_grad=True)
        fn(X).sum().backward()
        np.testing.assert_allclose(activation(name, x), fn(X).detach().numpy(), atol=1e-12)
        np.testing.assert_allclose(activation_grad(name, x), X.grad.numpy(), atol=1e-12)


def test_batchnorm_matches_torch_train_and_eval():
    bn, ref = BatchNormLayer(4), torch.nn.BatchNorm1d(4)
    for _ in range(3):
        x = (RNG.standard_normal((16, 4)) * 2 + 3).astype(np.float32)
        np.testing.assert_allclose(bn.forward(x), ref(torch.tensor(x)).detach().numpy(), atol=1e-5)
    np.testing.assert_allclose(bn.running_var, ref.running_var.numpy(), atol=1e-6)   # unbiased, like torch
    bn.training = False
    ref.eval()
    x = RNG.standard_normal((5, 4)).astype(np.float32)
    np.testing.assert_allclose(bn.forward(x), ref(torch.tensor(x)).detach().numpy(), atol=1e-5)


def test_network_matches_torch_twin_forward_backward():
    net = mlp([6, 8, 8, 3], act="gelu", batchnorm=True, rng=np.random.default_rng(4)).astype(np.float64)
    twin = to_torch(net, torch.float64)
    x, y = x64(10, 6), RNG.integers(0, 3, 10)
    loss = CrossEntropyLoss()
    loss.forward(net.forward(x), y)
    net.backward(loss.backward())
    torch.nn.functional.cross_entropy(twin(torch.tensor(x)), torch.tensor(y)).backward()
    np.testing.assert_allclose(net.layers[0].grads["W"], twin[0].weight.grad.numpy().T, atol=1e-10)
    np.testing.assert_allclose(net.layers[-1].grads["b"], twin[-1].bias.grad.numpy(), atol=1e-10)


@pytest.mark.parametrize("name,kw", [("SGD", dict(lr=0.1, momentum=0.9)), ("SGD", dict(lr=0.1)),
                                     ("Adam", dict(lr=0.01)), ("RMSprop", dict(lr=0.01))])
def test_optimizer_matches_torch(name, kw):
    ours_cls = {"SGD": SGD, "Adam": Adam, "RMSprop": RMSprop}[name]
    w0 = x64(4, 3)
    x, y = x64(12, 4), x64(12, 3)
    w = w0.copy()
    g = np.zeros_like(w)
    opt = ours_cls([(w, g)], **kw)
    W = torch.tensor(w0, requires_grad=True)
    ref = getattr(torch.optim, name)([W], **kw)
    for _ in range(5):                       # least squares: dL/dw = 2 x^T (x w - y) / n
        g[:] = 2 * x.T @ (x @ w - y) / y.size
        opt.step()
        ref.zero_grad()
        torch.mean((torch.tensor(x) @ W - torch.tensor(y)) ** 2).backward()
        ref.step()
    np.testing.assert_allclose(w, W.detach().numpy(), atol=1e-10)


def test_clip_grad_norm_matches_torch():
    gs = [x64(3, 4) * 10, x64(5) * 10]
    ts = [torch.nn.Parameter(torch.zeros(g.shape, dtype=torch.float64)) for g in gs]
    for t, g in zip(ts, gs):
        t.grad = torch.tensor(g)
    total = clip_grad_norm(gs, 1.0)
    ref = torch.nn.utils.clip_grad_norm_(ts, 1.0)
    assert abs(total - ref.item()) < 1e-9
    for t, g in zip(ts, gs):
        np.testing.assert_allclose(g, t.grad.numpy(), atol=1e-12)


def test_network_learns_xor():
    x = np.array([[0, 0], [0, 1], [1, 0], [1, 1]], np.float32)
    y = np.array([0, 1, 1, 0])
    net = mlp([2, 8, 2], act="tanh", rng=np.random.default_rng(0))
    net.fit(x, y, CrossEntropyLoss(), Adam(net.parameters(), lr=0.05), epochs=300, batch_size=4, progress=False)
    assert net.accuracy(x, y) == 1.0


def test_dropout_eval_is_identity_and_train_keeps_mean():
    d = DropoutLayer(0.5, np.random.default_rng(0))
    x = np.ones((2000, 50), np.float32)
    assert abs(d.forward(x).mean() - 1.0) < 0.02
    d.training = False
    assert d.forward(x) is x


def test_bad_inputs():
    with pytest.raises(ValueError, match="shape"):
        LinearLayer(5, 3).forward(np.zeros((2, 4), np.float32))
    with pytest.raises(ValueError, match="shape"):
        LinearLayer(5, 3).forward(np.zeros(5, np.float32))
    with pytest.raises(ValueError, match="shape"):
        BatchNormLayer(3).forward(np.zeros((4, 2), np.float32))
    with pytest.raises(ValueError, match="at least 2"):
        BatchNormLayer(3).forward(np.zeros((1, 3), np.float32))
    with pytest.raises(ValueError, match="unknown activation 'swish'"):
        ActivationLayer("swish")
    with pytest.raises(ValueError, match="dropout probability"):
        DropoutLayer(1.0)
    with pytest.raises(ValueError, match="same shape"):
        MSELoss().forward(np.zeros((3, 2)), np.zeros((3, 1)))
    with pytest.raises(ValueError, match="integer labels"):
        CrossEntropyLoss().forward(np.zeros((3, 2)), np.zeros(4, np.int64))
    with pytest.raises(ValueError, match="integer labels"):
        HingeLoss().forward(np.zeros((3, 2)), np.zeros(3))
    with pytest.raises(ValueError, match="labels must be in"):
        CrossEntropyLoss().forward(np.zeros((3, 2)), np.array([0, 1, 2]))
    with pytest.raises(ValueError, match="float64"):
        grad_check(LinearLayer(2, 2), np.zeros((2, 2), np.float32))
    with pytest.raises(ValueError, match="learning rate"):
        SGD([(np.zeros(2), np.zeros(2))], lr=-1)
    with pytest.raises(ValueError, match="shapes differ"):
        Adam([(np.zeros(2), np.zeros(3))])
    with pytest.raises(ValueError, match="rows"):
        mlp([4, 3]).fit(np.zeros((5, 4), np.float32), np.zeros(4, np.int64), CrossEntropyLoss(),
                        SGD(mlp([4, 3]).parameters()), epochs=1)
    with pytest.raises(ValueError, match="Layer"):
        Network([])


def test_train_step_is_one_fit_step():
    x, y = x64(16, 5).astype(np.float32), RNG.integers(0, 3, 16)
    a, b = mlp([5, 6, 3], rng=np.random.default_rng(5)), mlp([5, 6, 3], rng=np.random.default_rng(5))
    value = a.train_step(x, y, CrossEntropyLoss(), SGD(a.parameters(), lr=0.1))
    hist = b.fit(x, y, CrossEntropyLoss(), SGD(b.parameters(), lr=0.1), epochs=1, batch_size=16,
                 rng=np.random.default_rng(0), progress=False)
    assert abs(value - hist["step_loss"][0]) < 1e-6   # same batch up to order: the mean loss is the same
    for (_, p, _), (_, q, _) in zip(a.named_parameters(), b.named_parameters()):
        np.testing.assert_allclose(p, q, atol=1e-6)


def test_noise_layer_grad_check_eval_identity_and_redraws():
    layer = NoiseLayer(5, np.random.default_rng(0))
    assert max(grad_check(layer, x64(7, 5)).values()) < 1e-6     # grad_check reseeds its rng: one fixed draw
    x = x64(400, 5)
    first, second = layer.forward(x), layer.forward(x)
    assert not np.allclose(first, second)                         # a new noise distribution every step
    assert np.all((layer.s >= 0.5) & (layer.s <= 1.5))
    layer.training = False
    assert layer.forward(x) is x


def test_noisy_bn_mlp_puts_noise_after_every_bn():
    net = noisy_bn_mlp([4, 6, 6, 2], rng=np.random.default_rng(0))
    kinds = [type(l).__name__ for l in net.layers]
    assert kinds == ["LinearLayer", "BatchNormLayer", "NoiseLayer", "ActivationLayer"] * 2 + ["LinearLayer"]


def test_layer_input_stats_is_training_mode_and_leaves_running_stats():
    net = mlp([5, 8, 8, 3], act="sigmoid", batchnorm=True, rng=np.random.default_rng(0))
    x = (x64(64, 5) * 3 + 2).astype(np.float32)
    before = [(b.running_mean.copy(), b.running_var.copy()) for b in net.layers if isinstance(b, BatchNormLayer)]
    stats = layer_input_stats(net, x)
    assert len(stats) == 2
    for mean, std in stats:                       # BN output with batch statistics: beta = 0, gamma = 1
        np.testing.assert_allclose(mean, 0, atol=1e-5)
        np.testing.assert_allclose(std, 1, atol=1e-3)
    after = [(b.running_mean, b.running_var) for b in net.layers if isinstance(b, BatchNormLayer)]
    for (m0, v0), (m1, v1) in zip(before, after):
        np.testing.assert_array_equal(m0, m1)
        np.testing.assert_array_equal(v0, v1)
    pre = layer_input_stats(net, x, before=BatchNormLayer)
    assert np.all(pre[0][1] > 0) and not np.allclose(pre[0][0], 0)


def test_distribution_shift_scale():
    m, s = np.array([0.0, 1.0]), np.array([2.0, 2.0])
    assert distribution_shift([(m, s)], [(m, s)])[0] == 0
    assert distribution_shift([(m, s)], [(m + 2, s)])[0] == 1.0     # moved by its own width (RMS std 2)
    assert distribution_shift([(m, s)], [(m, s * 2)])[0] == 1.0


def test_gradient_change_restores_and_vanishes_with_lr():
    net = mlp([5, 8, 8, 3], act="tanh", rng=np.random.default_rng(0)).astype(np.float64)
    x, y = x64(20, 5), RNG.integers(0, 3, 20)
    params = [p.copy() for _, p, _ in net.named_parameters()]
    rel0, cos0 = gradient_change(net, CrossEntropyLoss(), x, y, lr=0.0)
    np.testing.assert_allclose(rel0, 0, atol=1e-12)
    np.testing.assert_allclose(cos0, 1, atol=1e-12)
    rel, cos = gradient_change(net, CrossEntropyLoss(), x, y, lr=0.5)
    assert rel.shape == (2,) and np.all(rel > 1e-3) and np.all(cos < 1)
    for p0, (_, p, _) in zip(params, net.named_parameters()):
        np.testing.assert_array_equal(p0, p)
    # the definition, by hand for the last layer: update layers 0..3 by -lr * grad, recompute dL/dW of layer 4
    loss = CrossEntropyLoss()
    loss.forward(net.forward(x), y); net.backward(loss.backward())
    G = net.layers[4].grads["W"].copy()
    for layer in net.layers[:4]:
        for k in layer.params:
            layer.params[k] -= 0.5 * layer.grads[k]
    loss.forward(net.forward(x), y); net.backward(loss.backward())
    assert abs(rel[-1] - np.linalg.norm(G - net.layers[4].grads["W"]) / np.linalg.norm(G)) < 1e-12
