"""The course's one training loop: `fit(model, train, val, epochs=…)` → `History`; `evaluate` → (loss, acc).

Every model that a notebook compares goes through the same `fit`, so the comparison differs only in the
model. Data is either a pair of tensors/arrays `(x, y)` (shuffled here, batched on the device) or any
iterable of `(x, y)` batches, such as a `DataLoader`. The optimizer and the scheduler are given as
factories because they need the model's parameters and the number of steps, which `fit` knows.
Also here: the tensor-side image preprocessing the CNN notebooks share (normalise, random crop + flip).
"""
from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from typing import Callable, Iterable

import numpy as np
import torch
import torch.nn.functional as F
from .progress import progress_bar

from .device import device as default_device


@dataclass
class History:
    """Per-epoch curves of one `fit` run; `seconds` is training time per epoch (evaluation excluded)."""

    train_loss: list = field(default_factory=list)
    train_acc: list = field(default_factory=list)
    val_loss: list = field(default_factory=list)
    val_acc: list = field(default_factory=list)
    seconds: list = field(default_factory=list)

    @property
    def total_seconds(self) -> float:
        return float(sum(self.seconds))

    def as_dict(self) -> dict:
        return asdict(self)


def _as_tensor(a, dtype=None) -> torch.Tensor:
    t = a if isinstance(a, torch.Tensor) else torch.from_numpy(np.asarray(a))
    return t if dtype is None else t.to(dtype)


def batches(data, batch_size: int, shuffle: bool, device) -> Iterable[tuple[torch.Tensor, torch.Tensor]]:
    """Yield `(x, y)` batches on `device` from a pair `(x, y)` or from an iterable of batches."""
    if isinstance(data, (tuple, list)) and len(data) == 2 and not isinstance(data[0], (tuple, list)):
        x, y = _as_tensor(data[0]), _as_tensor(data[1], torch.int64)
        if len(x) != len(y) or len(x) == 0:
            raise ValueError(f"x and y must be non-empty and equally long, got {len(x)} and {len(y)}")
        order = torch.randperm(len(x)) if shuffle else torch.arange(len(x))
        for i in range(0, len(x), batch_size):
            idx = order[i:i + batch_size]
            yield x[idx].to(device), y[idx].to(device)
    else:
        for x, y in data:
            yield _as_tensor(x).to(device), _as_tensor(y, torch.int64).to(device)


def _n_batches(data, batch_size: int) -> int | None:
    if isinstance(data, (tuple, list)) and len(data) == 2 and not isinstance(data[0], (tuple, list)):
        return -(-len(data[0]) // batch_size)
    try:
        return len(data)
    except TypeError:
        return None


@torch.no_grad()
def evaluate(model: torch.nn.Module, data, batch_size: int = 500,
             loss_fn: Callable = F.cross_entropy, device=None) -> tuple[float, float]:
    """Mean loss and accuracy of `model` on `data` (eval mode; the model's mode is restored after)."""
    device = device or default_device()
    was_training = model.training
    model.eval()
    total_loss, correct, n = 0.0, 0, 0
    for x, y in batches(data, batch_size, shuffle=False, device=device):
        logits = model(x)                                   # (B, classes)
        total_loss += float(loss_fn(logits, y, reduction="sum"))
        correct += int((logits.argmax(1) == y).sum())
        n += len(y)
    model.train(was_training)
    if n == 0:
        raise ValueError("evaluate: no data")
    return total_loss / n, correct / n


def fit(model: torch.nn.Module, train, val=None, *, epochs: int,
        optimizer: Callable = lambda params: torch.optim.AdamW(params, lr=1e-3),
        scheduler: Callable | None = None, loss_fn: Callable = F.cross_entropy,
        batch_size: int = 128, transform: Callable | None = None, device=None,
        progress: bool = True, desc: str = "fit") -> History:
    """Train `model` for `epochs` epochs; returns the per-epoch `History`.

    optimizer: `params -> torch.optim.Optimizer`.
    scheduler: `(optimizer, total_steps) -> lr scheduler`, stepped once per batch (e.g. OneCycleLR).
    transform: applied to each training batch `x` on the device (data augmentation), not to `val`.
    """
    if epochs < 1:
        raise ValueError(f"epochs must be >= 1, got {epochs}")
    device = device or default_device()
    model.to(device)
    opt = optimizer(model.parameters())
    per_epoch = _n_batches(train, batch_size)
    if scheduler is not None and per_epoch is None:
        raise ValueError("a scheduler needs the number of batches: pass (x, y) or a sized loader")
    sched = scheduler(opt, epochs * per_epoch) if scheduler is not None else None
    hist = History()
    bar = progress_bar(range(epochs), desc=desc, disable=not progress, leave=False)
    for _ in bar:
        model.train()
        t0, total_loss, correct, n = time.perf_counter(), 0.0, 0, 0
        for x, y in batches(train, batch_size, shuffle=True, device=device):
            if transform is not None:
                x = transform(x)
            logits = model(x)                               # (B, classes)
            loss = loss_fn(logits, y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            if sched is not None:
                sched.step()
            total_loss += loss.item() * len(y)
            correct += int((logits.argmax(1) == y).sum())
            n += len(y)
        hist.seconds.append(time.perf_counter() - t0)
        hist.train_loss.append(total_loss / n)
        hist.train_acc.append(correct / n)
        if val is not None:
            vl, va = evaluate(model, val, loss_fn=loss_fn, device=device)
            hist.val_loss.append(vl)
            hist.val_acc.append(va)
        bar.set_postfix(loss=f"{hist.train_loss[-1]:.3f}",
                        **({"val_acc": f"{hist.val_acc[-1]:.3f}"} if val is not None else {}))
    return hist


# --- image preprocessing shared by the CNN notebooks ---------------------------------------------


def channel_stats(images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-channel mean and std of uint8 NHWC images, on the 0-1 scale (compute them on the train set)."""
    if images.ndim != 4:
        raise ValueError(f"expected NHWC images, got shape {images.shape}")
    x = images.astype(np.float64) / 255.0
    return x.mean(axis=(0, 1, 2)), x.std(axis=(0, 1, 2))


def to_nchw(images: np.ndarray, mean, std) -> torch.Tensor:
    """uint8 NHWC (N, H, W, C) → normalised float32 NCHW (N, C, H, W): (x/255 - mean) / std per channel."""
    if images.ndim != 4 or images.shape[-1] != len(mean):
        raise ValueError(f"expected (N, H, W, {len(mean)}) images, got shape {images.shape}")
    x = torch.from_numpy(images).float().div_(255.0).permute(0, 3, 1, 2)      # (N, C, H, W)
    m = torch.as_tensor(mean, dtype=torch.float32).view(1, -1, 1, 1)
    s = torch.as_tensor(std, dtype=torch.float32).view(1, -1, 1, 1)
    return ((x - m) / s).contiguous()


def random_crop_flip(x: torch.Tensor, padding: int = 4) -> torch.Tensor:
    """The standard CIFAR augmentation on a batch: zero-pad, random crop back to H x W, flip half the images.

    Pure tensor ops (one gather), so it runs on whatever device the batch is on. Zero padding of a
    normalised image pads with the mean colour.
    """
    if x.ndim != 4:
        raise ValueError(f"expected (B, C, H, W), got {tuple(x.shape)}")
    B, C, H, W = x.shape
    dev = x.device
    xp = F.pad(x, (padding, padding, padding, padding))                       # (B, C, H+2p, W+2p)
    top = torch.randint(0, 2 * padding + 1, (B, 1), device=dev)
    left = torch.randint(0, 2 * padding + 1, (B, 1), device=dev)
    rows = top + torch.arange(H, device=dev)                                  # (B, H)
    cols = left + torch.arange(W, device=dev)                                 # (B, W)
    flip = torch.rand(B, 1, device=dev) < 0.5
    cols = torch.where(flip, cols.flip(1), cols)                              # mirrored read order
    b = torch.arange(B, device=dev).view(B, 1, 1, 1)
    c = torch.arange(C, device=dev).view(1, C, 1, 1)
    return xp[b, c, rows.view(B, 1, H, 1), cols.view(B, 1, 1, W)]             # (B, C, H, W)
