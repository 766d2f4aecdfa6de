"""micrograd: a scalar autograd engine and a tiny neural-net library on top (Karpathy, Lecture 1).

A `Value` wraps one float, remembers which Values produced it and how (`_prev`, `_op`), and knows
its local derivative (`_backward(g)`: given g = dL/d out, add dL/d input to each input's grad; it
receives g rather than reading `out.grad`, so no node refers back to its output and a graph is freed
by reference counting as soon as it is dropped, without waiting for Python's cycle collector). `backward()` orders the graph topologically and applies the
chain rule from the output back, *accumulating* (`+=`) into `.grad` so a node used twice gets the
sum of both paths.
"""
from __future__ import annotations

import gc
import math
import random
from contextlib import contextmanager
from numbers import Real


class Value:
    """A scalar node of a computation graph: `data`, `grad` and how to push `grad` to its inputs."""

    def __init__(self, data, _children: tuple = (), _op: str = "", label: str = ""):
        if type(data) is not float and type(data) is not int and (  # fast path for the common case
                not isinstance(data, Real) or isinstance(data, bool)):
            raise TypeError(f"Value wraps a real number, got {type(data).__name__}: {data!r}")
        self.data = float(data)
        self.grad = 0.0
        self._backward = lambda g: None  # given g = dL/d self, adds the chain-rule terms to the children
        # the distinct inputs, in order: a set (micrograd's choice) would make the order in which gradients
        # are summed, and so their last bits, change from run to run
        self._prev = tuple(dict.fromkeys(_children))
        self._op = _op
        self.label = label

    # ---- the primitive ops: each sets out._backward = local derivative x out.grad ----
    def __add__(self, other) -> Value:
        other = other if isinstance(other, Value) else Value(other)
        out = Value(self.data + other.data, (self, other), "+")

        def _backward(g):  # g = dL/d out
            self.grad += g
            other.grad += g
        out._backward = _backward
        return out

    def __mul__(self, other) -> Value:
        other = other if isinstance(other, Value) else Value(other)
        out = Value(self.data * other.data, (self, other), "*")

        def _backward(g):
            self.grad += other.data * g
            other.grad += self.data * g
        out._backward = _backward
        return out

    def __pow__(self, k) -> Value:
        if isinstance(k, Value) or not isinstance(k, Real):
            raise TypeError(f"Value ** k needs a constant int/float exponent, got {type(k).__name__}")
        out = Value(self.data ** k, (self,), f"**{k}")

        def _backward(g):
            self.grad += k * self.data ** (k - 1) * g
        out._backward = _backward
        return out

    def exp(self) -> Value:
        e = math.exp(self.data)
        out = Value(e, (self,), "exp")

        def _backward(g):
            self.grad += e * g  # d/dx e^x = e^x
        out._backward = _backward
        return out

    def log(self) -> Value:
        if self.data <= 0:
            raise ValueError(f"log of a non-positive value: {self.data}")
        out = Value(math.log(self.data), (self,), "log")

        def _backward(g):
            self.grad += g / self.data
        out._backward = _backward
        return out

    def tanh(self) -> Value:
        t = math.tanh(self.data)
        out = Value(t, (self,), "tanh")

        def _backward(g):
            self.grad += (1 - t * t) * g
        out._backward = _backward
        return out

    def relu(self) -> Value:
        on = self.data > 0
        out = Value(self.data if on else 0.0, (self,), "relu")

        def _backward(g):
            self.grad += g if on else 0.0
        out._backward = _backward
        return out

    # ---- everything else is built from the primitives ----
    def __neg__(self):
        return self * -1

    def __sub__(self, other):
        return self + (-other)

    def __truediv__(self, other):
        other = other if isinstance(other, Value) else Value(other)
        if other.data == 0:
            raise ZeroDivisionError(f"division by a Value equal to 0 ({self.data} / 0)")
        return self * other ** -1

    def __radd__(self, other):  # other + self
        return self + other

    def __rsub__(self, other):  # other - self
        return (-self) + other

    def __rmul__(self, other):  # other * self
        return self * other

    def __rtruediv__(self, other):  # other / self
        return Value(other) / self

    # ---- the chain rule over the whole graph ----
    def topo(self) -> list[Value]:
        """Every node of the graph behind self, each after all of its inputs (depth-first)."""
        order, seen = [], set()
        stack = [(self, False)]
        while stack:  # iterative DFS: deep graphs (long sums) do not hit the recursion limit
            node, expanded = stack.pop()
            if expanded:
                order.append(node)
            elif node not in seen:
                seen.add(node)
                stack.append((node, True))
                stack.extend((child, False) for child in node._prev if child not in seen)
        return order

    def backward(self) -> None:
        """d self / d node for every node, into node.grad (grads accumulate: zero them between steps)."""
        self.grad = 1.0
        for node in reversed(self.topo()):
            node._backward(node.grad)

    def __repr__(self):
        return f"Value(data={self.data:.6g}, grad={self.grad:.6g})"


# ---------------------------------------------------------------- a tiny neural-net library

class Module:
    def parameters(self) -> list[Value]:
        return []

    def zero_grad(self) -> None:
        for p in self.parameters():
            p.grad = 0.0


class Neuron(Module):
    """act(w . x + b) with w ~ U(-1, 1), b = 0."""

    ACTS = ("tanh", "relu", "linear")

    def __init__(self, nin: int, act: str = "tanh", rng: random.Random | None = None):
        if act not in self.ACTS:
            raise ValueError(f"unknown activation {act!r}; expected one of {self.ACTS}")
        rng = rng or random
        self.w = [Value(rng.uniform(-1, 1)) for _ in range(nin)]
        self.b = Value(0.0)
        self.act = act

    def __call__(self, x):
        if len(x) != len(self.w):
            raise ValueError(f"Neuron expects {len(self.w)} inputs, got {len(x)}")
        z = sum((wi * xi for wi, xi in zip(self.w, x)), self.b)
        return z.tanh() if self.act == "tanh" else z.relu() if self.act == "relu" else z

    def parameters(self):
        return self.w + [self.b]


class Layer(Module):
    """`nout` independent neurons reading the same inputs."""

    def __init__(self, nin: int, nout: int, act: str = "tanh", rng: random.Random | None = None):
        self.neurons = [Neuron(nin, act, rng) for _ in range(nout)]

    def __call__(self, x):
        out = [n(x) for n in self.neurons]
        return out[0] if len(out) == 1 else out

    def parameters(self):
        return [p for n in self.neurons for p in n.parameters()]


class MLP(Module):
    """MLP(2, [16, 16, 1]): hidden layers use `act`, the last layer is linear (a score / logit)."""

    def __init__(self, nin: int, nouts: list[int], act: str = "tanh", rng: random.Random | None = None):
        sizes = [nin] + list(nouts)
        self.layers = [Layer(sizes[i], sizes[i + 1], act if i < len(nouts) - 1 else "linear", rng)
                       for i in range(len(nouts))]

    def __call__(self, x):
        for layer in self.layers:
            x = layer(x)
        return x

    def parameters(self):
        return [p for layer in self.layers for p in layer.parameters()]


@contextmanager
def paused_gc():
    """Pause Python's cycle collector while a big scalar graph is built.

    A forward pass allocates ~10 objects per node; every few hundred allocations the collector
    rescans the young (still growing) graph, which made building it ~5x slower. Our graphs hold no
    reference cycles (see `_backward(g)`), so reference counting alone frees them.
    """
    was = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was:
            gc.enable()


def hinge_loss(model: MLP, X, y, alpha: float = 1e-4) -> tuple[Value, float]:
    """micrograd's demo loss: mean max(0, 1 - y*score) + alpha*|w|^2, and the accuracy (labels y in {-1, +1})."""
    with paused_gc():
        return _hinge_loss(model, X, y, alpha)


def _hinge_loss(model, X, y, alpha):
    scores = [model([Value(float(v)) for v in row]) for row in X]
    losses = [(1 - yi * si).relu() for yi, si in zip(y, scores)]
    data_loss = sum(losses) * (1.0 / len(losses))
    reg = alpha * sum(p * p for p in model.parameters())
    acc = sum((yi > 0) == (si.data > 0) for yi, si in zip(y, scores)) / len(y)
    return data_loss + reg, acc


def numerical_grad(f, params: list[Value], h: float = 1e-6) -> list[float]:
    """Central differences (f(p+h) - f(p-h)) / 2h for each parameter; `f()` returns a Value or float."""
    out = []
    for p in params:
        old = p.data
        p.data = old + h
        up = f()
        p.data = old - h
        down = f()
        p.data = old
        up, down = (v.data if isinstance(v, Value) else v for v in (up, down))
        out.append((up - down) / (2 * h))
    return out


def torch_mlp_loss_grads(model: MLP, X, y, alpha: float = 1e-4):
    """The oracle: the same MLP and hinge loss in float64 torch; returns (loss, grads in `parameters()` order)."""
    import torch

    f64 = dict(dtype=torch.float64, requires_grad=True)
    Ws = [torch.tensor([[w.data for w in n.w] for n in layer.neurons], **f64) for layer in model.layers]
    bs = [torch.tensor([n.b.data for n in layer.neurons], **f64) for layer in model.layers]
    x = torch.tensor(X, dtype=torch.float64)  # (N, nin)
    for layer, W, b in zip(model.layers, Ws, bs):
        x = x @ W.T + b  # (N, nout)
        act = layer.neurons[0].act
        x = torch.tanh(x) if act == "tanh" else torch.relu(x) if act == "relu" else x
    scores = x.squeeze(-1)  # (N,)
    loss = torch.relu(1 - torch.tensor(y, dtype=torch.float64) * scores).mean()
    loss = loss + alpha * sum((t ** 2).sum() for t in Ws + bs)
    loss.backward()
    grads = []
    for W, b in zip(Ws, bs):
        for j in range(W.shape[0]):  # neuron j: its weights, then its bias (as Neuron.parameters())
            grads += W.grad[j].tolist() + [b.grad[j].item()]
    return loss.item(), grads
