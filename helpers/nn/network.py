"""`Network`: a stack of layers with one forward, one backward, and a minibatch training loop."""
from __future__ import annotations

import time

import numpy as np
from ..progress import progress_bar

from .activations import ActivationLayer
from .dropout import DropoutLayer
from .layer import Layer
from .linear import LinearLayer
from .normalization import BatchNormLayer
from .optim import clip_grad_norm


class Network(Layer):
    """Composition: forward runs the layers in order, backward runs them in reverse (the chain rule).

    The first layer is told it needs no input gradient, which saves one matmul per step.
    """

    def __init__(self, layers: list[Layer]):
        super().__init__()
        if not layers or not all(isinstance(l, Layer) for l in layers):
            raise ValueError(f"Network needs a non-empty list of Layer objects, got {layers!r}")
        self.layers = list(layers)
        if isinstance(self.layers[0], LinearLayer):
            self.layers[0].input_grad = False

    def forward(self, x):
        for layer in self.layers:
            x = layer.forward(x)
        return x

    def backward(self, grad):
        for layer in reversed(self.layers):
            grad = layer.backward(grad)
        return grad

    def named_parameters(self):
        """[(name, param, grad)] for every parameter, e.g. ('0.W', W, dW)."""
        return [(f"{i}.{k}", l.params[k], l.grads[k]) for i, l in enumerate(self.layers) for k in l.params]

    def parameters(self):
        """[(param, grad)] pairs for an optimizer."""
        return [(p, g) for _, p, g in self.named_parameters()]

    def train(self, mode: bool = True) -> "Network":
        for layer in self.layers:
            layer.training = mode
        self.training = mode
        return self

    def eval(self) -> "Network":
        return self.train(False)

    def astype(self, dtype):
        for layer in self.layers:
            layer.astype(dtype)
        return self

    def predict(self, x, batch_size: int = 4096) -> np.ndarray:
        """Outputs in eval mode, in chunks (no caches kept for backward)."""
        mode = self.training
        self.eval()
        out = np.concatenate([self.forward(x[i:i + batch_size]) for i in range(0, len(x), batch_size)])
        self.train(mode)
        return out

    def accuracy(self, x, y) -> float:
        return float(np.mean(self.predict(x).argmax(axis=1) == y))

    def train_step(self, xb, yb, loss, optimizer, clip: float | None = None) -> float:
        """One update on one minibatch: forward, loss, backward (the chain rule), (clip), optimizer step."""
        value = loss.forward(self.forward(xb), yb)      # forward pass caches what backward needs
        self.backward(loss.backward())                  # fills every layer's .grads
        if clip is not None:
            clip_grad_norm([g for _, g in optimizer.pairs], clip)
        optimizer.step()                                # updates the params in place
        return value

    def fit(self, x, y, loss, optimizer, epochs: int, batch_size: int = 128, rng=None,
            lr_schedule=None, x_val=None, y_val=None, clip: float | None = None,
            progress: bool = True, desc: str = "numpy", on_step=None) -> dict:
        """Minibatch training: `epochs` passes over shuffled data, one `train_step` per batch.

        `lr_schedule(step) -> lr` is applied before every step; `rng` shuffles the data each epoch
        (a PyTorch twin given an identically seeded rng sees the same batches); `on_step(step)` is called
        after every update (for probes). Returns a history: per-step loss, per-epoch train loss,
        validation accuracy and seconds.
        """
        if len(x) != len(y):
            raise ValueError(f"x has {len(x)} rows but y has {len(y)}")
        rng = rng if rng is not None else np.random.default_rng(0)
        n, steps = len(x), -(-len(x) // batch_size)
        hist = {"step_loss": [], "train_loss": [], "val_acc": [], "seconds": []}
        step = 0
        bar = progress_bar(range(epochs), desc=desc, disable=not progress, leave=False)
        for _ in bar:
            self.train()
            t0, total = time.perf_counter(), 0.0
            perm = rng.permutation(n)
            for i in range(steps):
                idx = perm[i * batch_size:(i + 1) * batch_size]
                if lr_schedule is not None:
                    optimizer.lr = lr_schedule(step)
                value = self.train_step(x[idx], y[idx], loss, optimizer, clip)
                total += value
                hist["step_loss"].append(value)
                step += 1
                if on_step is not None:
                    on_step(step)
            hist["seconds"].append(time.perf_counter() - t0)
            hist["train_loss"].append(total / steps)
            if x_val is not None:
                hist["val_acc"].append(self.accuracy(x_val, y_val))
                bar.set_postfix(loss=f"{hist['train_loss'][-1]:.4f}", val_acc=f"{hist['val_acc'][-1]:.4f}", refresh=False)
        return hist

    def __repr__(self):
        return "Network(\n" + "\n".join(f"  {l!r}" for l in self.layers) + "\n)"


def mlp(sizes: list[int], act: str = "relu", batchnorm: bool = False, dropout: float = 0.0,
        rng=None, dtype=np.float32) -> Network:
    """An MLP: [Linear -> (BatchNorm) -> Activation -> (Dropout)] per hidden layer, then a Linear head."""
    if len(sizes) < 2:
        raise ValueError(f"mlp needs at least input and output sizes, got {sizes}")
    rng = rng if rng is not None else np.random.default_rng(0)
    layers: list[Layer] = []
    for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:])):
        layers.append(LinearLayer(a, b, rng, dtype))
        if i < len(sizes) - 2:
            if batchnorm:
                layers.append(BatchNormLayer(b, dtype=dtype))
            layers.append(ActivationLayer(act))
            if dropout:
                layers.append(DropoutLayer(dropout, rng))
    return Network(layers)
