"""Internal covariate shift, measured (Module 0.2, Exercise 3).

Ioffe & Szegedy (2015) motivated batch norm by *internal covariate shift* (ICS): each layer's input
distribution moves as the layers before it learn. Santurkar et al. (2018, "How does batch normalization
help optimization?") tested that story two ways, both reproduced here on an MLP:

* `NoiseLayer`: noise with a non-zero mean and a non-unit variance, its distribution redrawn at every step,
  injected after each BN layer. The layer inputs then shift far more than with plain BN; if stable
  distributions were why BN helps, this net should train badly.
* `gradient_change`: their ICS measure, how much layer i's gradient changes when only the layers before it
  take their update (same batch): ||G - G'|| / ||G|| and cos(G, G').

`layer_input_stats` probes, in training mode, the mean and std of every unit's input to each nonlinearity.
"""
from __future__ import annotations

import numpy as np

from .activations import ActivationLayer
from .layer import Layer, check_2d
from .linear import LinearLayer
from .network import Network, mlp
from .normalization import BatchNormLayer


class NoiseLayer(Layer):
    """Santurkar et al.'s "noisy BatchNorm": y = s * x + n in training, identity in eval.

    At every training forward, each feature j draws a scale s_j ~ U(scale) and a noise distribution
    N(m_j, v_j^2) with m_j ~ U(-mean, mean), v_j ~ U(0, std); every element then gets its own n_ij from it.
    So the next layer's input has a non-zero mean and a non-unit variance that change at every step.
    """

    def __init__(self, n_features: int, rng: np.random.Generator | None = None, mean: float = 1.0,
                 std: float = 0.5, scale: tuple[float, float] = (0.5, 1.5)):
        super().__init__()
        self.n, self.mean, self.std, self.scale = n_features, mean, std, scale
        self.rng = rng if rng is not None else np.random.default_rng(0)   # grad_check reseeds it: same draw

    def forward(self, x):
        check_2d(x, self.n, "NoiseLayer")
        if not self.training:
            return x
        r, d = self.rng, self.n
        self.s = r.uniform(*self.scale, d).astype(x.dtype)                             # (D,) this step's scale
        m, v = r.uniform(-self.mean, self.mean, d), r.uniform(0, self.std, d)          # (D,) this step's N(m, v^2)
        self.noise = (m + v * r.standard_normal(x.shape)).astype(x.dtype)              # (N, D)
        return x * self.s + self.noise

    def backward(self, grad_out):
        return grad_out * self.s if self.training else grad_out

    def __repr__(self):
        return f"NoiseLayer({self.n}, mean=±{self.mean}, std≤{self.std}, scale={self.scale})"


def noisy_bn_mlp(sizes: list[int], act: str = "relu", rng=None, noise_rng=None, **noise) -> Network:
    """`mlp(sizes, batchnorm=True)` with a `NoiseLayer` right after every BN layer."""
    rng = rng if rng is not None else np.random.default_rng(0)
    layers = []
    for layer in mlp(sizes, act=act, batchnorm=True, rng=rng).layers:
        layers.append(layer)
        if isinstance(layer, BatchNormLayer):
            layers.append(NoiseLayer(layer.params["gamma"].shape[0], noise_rng, **noise))
    return Network(layers)


class _KeepRunningStats:
    """Context: BN running statistics restored on exit, so a probe forward in training mode leaves no trace."""

    def __init__(self, net: Network):
        self.bns = [l for l in net.layers if isinstance(l, BatchNormLayer)]

    def __enter__(self):
        self.saved = [(b.running_mean.copy(), b.running_var.copy()) for b in self.bns]

    def __exit__(self, *exc):
        for b, (m, v) in zip(self.bns, self.saved):
            b.running_mean[:], b.running_var[:] = m, v


def layer_input_stats(net: Network, x: np.ndarray, before=ActivationLayer) -> list[tuple[np.ndarray, np.ndarray]]:
    """[(mean, std) per unit] of the input to each layer of type `before` (default: each nonlinearity), from
    a TRAINING-mode forward of x (batch statistics in BN, noise drawn: what the layer sees in training)."""
    out = []
    with _KeepRunningStats(net):
        net.train()
        for layer in net.layers:
            if isinstance(layer, before):
                out.append((x.mean(0), x.std(0)))
            x = layer.forward(x)
    return out


def distribution_shift(before, after) -> np.ndarray:
    """Per layer: mean over units of (|Δmean| + |Δstd|) / RMS std of the layer's units before (a scale-free
    distance between two `layer_input_stats` probes; 1 = the distribution moved by about its own width)."""
    d = []
    for (m0, s0), (m1, s1) in zip(before, after):
        scale = np.sqrt(np.mean(s0.astype(np.float64) ** 2))
        d.append(float(np.mean(np.abs(m1 - m0) + np.abs(s1 - s0)) / scale))
    return np.array(d)


def _weight_grads(net: Network, loss, x, y) -> list[np.ndarray]:
    loss.forward(net.forward(x), y)
    net.backward(loss.backward())
    return [l.grads["W"].astype(np.float64).copy() for l in net.layers if isinstance(l, LinearLayer)]


def gradient_change(net: Network, loss, x, y, lr: float) -> tuple[np.ndarray, np.ndarray]:
    """Santurkar et al.'s ICS of each Linear layer i >= 2: G = dL/dW_i on batch (x, y); G' = the same gradient
    after an SGD step (rate lr) of only the layers before i. Returns (||G - G'|| / ||G||, cos(G, G')) per layer.
    Parameters and BN running statistics are restored afterwards."""
    lin = [i for i, l in enumerate(net.layers) if isinstance(l, LinearLayer)]
    params = [(p, g) for l in net.layers for p, g in zip(l.params.values(), l.grads.values())]
    saved = [p.copy() for p, _ in params]
    rel, cos = [], []
    with _KeepRunningStats(net):
        net.train()
        G = _weight_grads(net, loss, x, y)
        steps = [[-lr * l.grads[k].copy() for k in l.params] for l in net.layers]
        for k, i in enumerate(lin[1:], start=1):
            for layer, delta in zip(net.layers[:i], steps[:i]):       # update only the layers before i
                for p, dp in zip(layer.params.values(), delta):
                    p += dp
            G2 = _weight_grads(net, loss, x, y)[k]
            rel.append(float(np.linalg.norm(G[k] - G2) / np.linalg.norm(G[k])))
            cos.append(float(np.sum(G[k] * G2) / (np.linalg.norm(G[k]) * np.linalg.norm(G2))))
            for (p, _), p0 in zip(params, saved):
                p[:] = p0
    return np.array(rel), np.array(cos)
