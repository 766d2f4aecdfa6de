"""The PyTorch equivalent of a `Network`: same layers, the same initial numbers copied in, and a
training loop with the same batches, schedule and hyperparameters, so the two can be compared."""
from __future__ import annotations

import time

import numpy as np
import torch
from ..progress import progress_bar

from .activations import LEAKY_SLOPE, ActivationLayer
from .dropout import DropoutLayer
from .linear import LinearLayer
from .network import Network
from .normalization import BatchNormLayer, LayerNormLayer

_ACTS = {"relu": lambda: torch.nn.ReLU(), "sigmoid": lambda: torch.nn.Sigmoid(), "tanh": lambda: torch.nn.Tanh(),
         "leaky_relu": lambda: torch.nn.LeakyReLU(LEAKY_SLOPE), "gelu": lambda: torch.nn.GELU()}


def to_torch(net: Network, dtype=torch.float32) -> torch.nn.Sequential:
    """A `torch.nn.Sequential` with the numpy network's current weights (W transposed to (out, in))."""
    mods = []
    for layer in net.layers:
        if isinstance(layer, LinearLayer):
            W, b = layer.params["W"], layer.params["b"]
            m = torch.nn.Linear(*W.shape)
            m.weight.data = torch.tensor(W.T, dtype=dtype)
            m.bias.data = torch.tensor(b, dtype=dtype)
        elif isinstance(layer, BatchNormLayer):
            m = torch.nn.BatchNorm1d(len(layer.params["gamma"]), eps=layer.eps, momentum=layer.momentum)
            m.weight.data = torch.tensor(layer.params["gamma"], dtype=dtype)
            m.bias.data = torch.tensor(layer.params["beta"], dtype=dtype)
            m.running_mean = torch.tensor(layer.running_mean, dtype=dtype)
            m.running_var = torch.tensor(layer.running_var, dtype=dtype)
        elif isinstance(layer, LayerNormLayer):
            m = torch.nn.LayerNorm(len(layer.params["gamma"]), eps=layer.eps)
            m.weight.data = torch.tensor(layer.params["gamma"], dtype=dtype)
            m.bias.data = torch.tensor(layer.params["beta"], dtype=dtype)
        elif isinstance(layer, ActivationLayer):
            m = _ACTS[layer.name]()
        elif isinstance(layer, DropoutLayer):
            m = torch.nn.Dropout(layer.p)
        else:
            raise ValueError(f"to_torch: no PyTorch equivalent for {layer!r}")
        mods.append(m)
    return torch.nn.Sequential(*mods)


@torch.no_grad()
def torch_accuracy(model, x: np.ndarray, y: np.ndarray, batch_size: int = 4096) -> float:
    model.eval()
    xt = torch.from_numpy(x)
    pred = torch.cat([model(xt[i:i + batch_size]).argmax(1) for i in range(0, len(x), batch_size)])
    return float((pred.numpy() == y).mean())


def fit_torch(model, x, y, loss_fn, optimizer, epochs: int, batch_size: int = 128, rng=None,
              lr_schedule=None, x_val=None, y_val=None, clip: float | None = None,
              progress: bool = True, desc: str = "torch") -> dict:
    """The twin of `Network.fit`: same shuffles (from `rng`), same per-step lr, same history keys."""
    rng = rng if rng is not None else np.random.default_rng(0)
    xt, yt = torch.from_numpy(x), torch.from_numpy(np.asarray(y, np.int64))
    n, steps = len(x), -(-len(x) // batch_size)
    hist = {"step_loss": [], "train_loss": [], "val_acc": [], "seconds": []}
    step = 0
    bar = progress_bar(range(epochs), desc=desc, disable=not progress, leave=False)
    for _ in bar:
        model.train()
        t0, total = time.perf_counter(), 0.0
        perm = torch.from_numpy(rng.permutation(n))
        for i in range(steps):
            idx = perm[i * batch_size:(i + 1) * batch_size]
            if lr_schedule is not None:
                for group in optimizer.param_groups:
                    group["lr"] = lr_schedule(step)
            loss = loss_fn(model(xt[idx]), yt[idx])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if clip is not None:
                torch.nn.utils.clip_grad_norm_(model.parameters(), clip)
            optimizer.step()
            value = loss.item()
            total += value
            hist["step_loss"].append(value)
            step += 1
        hist["seconds"].append(time.perf_counter() - t0)
        hist["train_loss"].append(total / steps)
        if x_val is not None:
            hist["val_acc"].append(torch_accuracy(model, x_val, y_val))
            bar.set_postfix(loss=f"{hist['train_loss'][-1]:.4f}", val_acc=f"{hist['val_acc'][-1]:.4f}", refresh=False)
    return hist
