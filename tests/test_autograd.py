"""micrograd (helpers/autograd.py): every op against torch autograd, graph order, the MLP, bad inputs."""
import math
import random

import pytest
import torch

from helpers.autograd import MLP, Layer, Neuron, Value, hinge_loss, numerical_grad, torch_mlp_loss_grads


def _t(x):
    return torch.tensor(x, dtype=torch.float64, requires_grad=True)


# (name, micrograd fn, torch fn, inputs) for one- and two-argument ops
UNARY = [
    ("exp", lambda a: a.exp(), torch.exp, 0.7),
    ("log", lambda a: a.log(), torch.log, 2.3),
    ("tanh", lambda a: a.tanh(), torch.tanh, -0.4),
    ("relu+", lambda a: a.relu(), torch.relu, 1.5),
    ("relu-", lambda a: a.relu(), torch.relu, -1.5),
    ("neg", lambda a: -a, lambda a: -a, 0.9),
    ("pow int", lambda a: a ** 3, lambda a: a ** 3, -1.3),
    ("pow float", lambda a: a ** 0.5, lambda a: a ** 0.5, 2.0),
    ("pow neg", lambda a: a ** -2, lambda a: a ** -2, 1.7),
    ("rtruediv", lambda a: 3.0 / a, lambda a: 3.0 / a, 1.2),
    ("rsub", lambda a: 2.0 - a, lambda a: 2.0 - a, 0.3),
    ("radd/rmul", lambda a: 2.0 * a + 1.0, lambda a: 2.0 * a + 1.0, 0.3),
]
BINARY = [
    ("add", lambda a, b: a + b), ("sub", lambda a, b: a - b),
    ("mul", lambda a, b: a * b), ("div", lambda a, b: a / b),
]


@pytest.mark.parametrize("name,f,tf,x", UNARY, ids=[u[0] for u in UNARY])
def test_unary_op_value_and_grad_match_torch(name, f, tf, x):
    a = Value(x)
    out = f(a)
    out.backward()
    ta = _t(x)
    ref = tf(ta)
    ref.backward()
    assert out.data == pytest.approx(ref.item(), abs=1e-12)
    assert a.grad == pytest.approx(ta.grad.item(), abs=1e-10)


@pytest.mark.parametrize("name,f", BINARY, ids=[b[0] for b in BINARY])
def test_binary_op_value_and_grads_match_torch(name, f):
    a, b = Value(1.7), Value(-0.6)
    out = f(a, b)
    out.backward()
    ta, tb = _t(1.7), _t(-0.6)
    ref = f(ta, tb)
    ref.backward()
    assert out.data == pytest.approx(ref.item(), abs=1e-12)
    assert (a.grad, b.grad) == pytest.approx((ta.grad.item(), tb.grad.item()), abs=1e-10)


def test_micrograd_reference_expression():
    """The sanity check from Karpathy's micrograd test suite."""
    def f(a, b, relu):
        c = a + b
        d = a * b + b ** 3
        c = c + c + 1
        c = c + 1 + c + (-a)
        d = d + d * 2 + relu(b + a)
        d = d + 3 * d + relu(b - a)
        e = c - d
        f_ = e ** 2
        g = f_ / 2.0
        return g + 10.0 / f_
    a, b = Value(-4.0), Value(2.0)
    g = f(a, b, lambda v: v.relu())
    g.backward()
    ta, tb = _t(-4.0), _t(2.0)
    tg = f(ta, tb, torch.relu)
    tg.backward()
    assert g.data == pytest.approx(tg.item(), abs=1e-6)
    assert a.grad == pytest.approx(ta.grad.item(), abs=1e-6)
    assert b.grad == pytest.approx(tb.grad.item(), abs=1e-6)


def test_shared_nodes_accumulate_and_topological_order():
    a = Value(3.0)
    b = a * a  # a used twice in one op
    c = b + a  # and again
    d = c * b  # b used twice in the graph
    d.backward()
    # d = (a^2 + a) * a^2 = a^4 + a^3 -> 4a^3 + 3a^2
    assert a.grad == pytest.approx(4 * 27 + 3 * 9)
    order = d.topo()
    assert len(order) == len(set(order)) == 4
    pos = {n: i for i, n in enumerate(order)}
    assert all(pos[child] < pos[n] for n in order for child in n._prev)
    assert order[-1] is d


def test_deep_graph_does_not_hit_recursion_limit():
    x = Value(0.5)
    s = Value(0.0)
    for _ in range(5000):
        s = s + x
    s.backward()
    assert x.grad == 5000


def test_mlp_gradients_match_torch():
    rs = random.Random(0)  # 12 points in 2-D labelled by quadrant (XOR): no sklearn import, which took 4 s here
    X = [[rs.uniform(-1, 1), rs.uniform(-1, 1)] for _ in range(12)]
    y = [1 if a * b > 0 else -1 for a, b in X]
    for act in ("tanh", "relu"):
        net = MLP(2, [6, 5, 1], act=act, rng=random.Random(1))
        loss, acc = hinge_loss(net, X, y)
        net.zero_grad()
        loss.backward()
        ref_loss, ref_grads = torch_mlp_loss_grads(net, X, y)
        assert loss.data == pytest.approx(ref_loss, abs=1e-10)
        assert [p.grad for p in net.parameters()] == pytest.approx(ref_grads, abs=1e-10)
        assert 0.0 <= acc <= 1.0


def test_numerical_gradient_agrees_with_backward():
    net = MLP(3, [4, 1], rng=random.Random(0))
    xs = [[2.0, 3.0, -1.0], [3.0, -1.0, 0.5]]
    def loss_fn():
        return sum((net(x) - t) ** 2 for x, t in zip(xs, [1.0, -1.0]))
    net.zero_grad()
    loss_fn().backward()
    num = numerical_grad(loss_fn, net.parameters())
    assert [p.grad for p in net.parameters()] == pytest.approx(num, abs=1e-6)


def test_training_lowers_the_loss():
    net = MLP(3, [4, 4, 1], rng=random.Random(0))
    xs = [[2.0, 3.0, -1.0], [3.0, -1.0, 0.5], [0.5, 1.0, 1.0], [1.0, 1.0, -1.0]]
    ys = [1.0, -1.0, -1.0, 1.0]
    losses = []
    for _ in range(30):
        loss = sum((net(x) - y) ** 2 for x, y in zip(xs, ys))
        net.zero_grad()
        loss.backward()
        for p in net.parameters():
            p.data -= 0.05 * p.grad
        losses.append(loss.data)
    assert losses[-1] < 0.1 * losses[0]


def test_layer_shapes_and_parameter_count():
    net = MLP(2, [16, 16, 1])
    assert len(net.parameters()) == (2 + 1) * 16 + (16 + 1) * 16 + (16 + 1) * 1
    assert isinstance(net([1.0, 2.0]), Value)  # a single output is returned unwrapped
    assert len(Layer(3, 4)([1.0, 2.0, 3.0])) == 4
    assert net.layers[-1].neurons[0].act == "linear"


@pytest.mark.parametrize("bad", [0.0, -1.0])
def test_log_of_non_positive_raises(bad):
    with pytest.raises(ValueError, match="non-positive"):
        Value(bad).log()


def test_pow_with_value_exponent_raises():
    with pytest.raises(TypeError):
        Value(2.0) ** Value(3.0)


def test_bad_inputs_raise():
    with pytest.raises(TypeError):
        Value("1.0")
    with pytest.raises(TypeError):
        Value(Value(1.0))
    with pytest.raises(ZeroDivisionError):
        Value(1.0) / Value(0.0)
    with pytest.raises(ValueError, match="expects 3 inputs"):
        Neuron(3)([1.0, 2.0])
    with pytest.raises(ValueError, match="unknown activation"):
        Neuron(2, act="sigmoid")


def test_grad_of_exp_tanh_closed_forms():
    x = Value(0.3)
    y = x.tanh() * x.exp()
    y.backward()
    expected = (1 - math.tanh(0.3) ** 2) * math.exp(0.3) + math.tanh(0.3) * math.exp(0.3)
    assert x.grad == pytest.approx(expected, abs=1e-12)


def test_graph_layout_puts_inputs_left_of_their_users():
    from helpers.draw_graph import draw_graph, graph_layout

    a, b, c = Value(2.0, label="a"), Value(-3.0, label="b"), Value(10.0, label="c")
    e = a * b
    d = e + c
    L = d * Value(-2.0, label="f")
    pos = graph_layout(L)
    assert len(pos) == 7 and pos[L][0] == max(x for x, _ in pos.values())
    for node in pos:
        for child in node._prev:
            assert pos[child][0] < pos[node][0]
    assert pos[c][0] == pos[e][0]  # a leaf sits just before its first use, beside e
    import matplotlib
    matplotlib.use("Agg")
    assert draw_graph(L) is not None
