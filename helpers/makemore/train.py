"""Training, evaluation, the learning-rate range sweep and sampling for the makemore models.

The update is Karpathy's: minibatch SGD, `p.data -= lr * p.grad`, with a step schedule
(lr for the first 75% of the steps, lr/10 after). Everything runs on float32 tensors.
"""
from __future__ import annotations

import math
import time

import torch
import torch.nn.functional as F

from .layers import Sequential


def step_schedule(lr: float, steps: int, at: float = 0.75, factor: float = 0.1):
    """lr_at(i): `lr` until `at * steps`, then `lr * factor` (Karpathy: 0.1 -> 0.01 at 150k of 200k)."""
    return lambda i: lr if i < at * steps else lr * factor


def sgd_step(params: list[torch.Tensor], lr: float) -> None:
    with torch.no_grad():
        for p in params:
            p -= lr * p.grad


def train(model: Sequential, X: torch.Tensor, Y: torch.Tensor, steps: int, batch_size: int, lr_at,
          generator: torch.Generator | None = None, track_ud: bool = False, progress: bool = True,
          device=None, desc: str | None = None) -> dict:
    """Minibatch SGD; returns {'loss': per-step train loss, 'ud': per-step log10 update/data ratios, 'seconds'}.

    `ud` (Lecture 4) is log10(std(lr * grad) / std(weight)) for every 2-D weight: ~ -3 is healthy.
    `device` (e.g. `helpers.device()`): train there — the model and the data are moved for the loop and the
    model is moved back where it was afterwards, so the rest of the notebook never sees a GPU tensor.
    The batches come from the CPU `generator`, so a run draws the same examples on every device.
    """
    from ..progress import progress_bar

    if len(X) != len(Y):
        raise ValueError(f"X and Y differ in length: {len(X)} vs {len(Y)}")
    home = model.device
    run_on = torch.device(device) if device is not None else home
    model.to(run_on)
    X, Y = X.to(run_on), Y.to(run_on)
    params = model.parameters()
    model.train()
    losses = torch.empty(steps, device=run_on)  # kept on the device: no host sync per step
    ud = []
    t0 = time.perf_counter()
    for i in progress_bar(range(steps), disable=not progress, mininterval=2, leave=False, desc=desc):
        ix = torch.randint(0, len(X), (batch_size,), generator=generator).to(run_on)
        loss = F.cross_entropy(model(X[ix]), Y[ix])
        for p in params:
            p.grad = None
        loss.backward()
        lr = lr_at(i)
        sgd_step(params, lr)
        losses[i] = loss.detach()
        if track_ud:
            with torch.no_grad():
                ud.append(torch.stack([(lr * p.grad.std() / p.data.std()).log10() for p in params if p.ndim == 2]))
    out = {"loss": losses.tolist(), "ud": torch.stack(ud).tolist() if ud else [],
           "seconds": time.perf_counter() - t0}
    model.to(home)
    return out


@torch.no_grad()
def example_losses(model: Sequential, X: torch.Tensor, Y: torch.Tensor, chunk: int = 65536) -> torch.Tensor:
    """Cross-entropy of every example (nats), in evaluation mode (BatchNorm uses its running stats)."""
    model.eval()
    dev = model.device
    out = torch.cat([F.cross_entropy(model(X[s:s + chunk].to(dev)), Y[s:s + chunk].to(dev), reduction="none").cpu()
                     for s in range(0, len(X), chunk)])
    model.train()
    return out


def evaluate(model: Sequential, X: torch.Tensor, Y: torch.Tensor, chunk: int = 65536) -> float:
    """Mean cross-entropy (nats per character) in evaluation mode."""
    return example_losses(model, X, Y, chunk).double().mean().item()


def lr_range_sweep(model: Sequential, X: torch.Tensor, Y: torch.Tensor, lrs: torch.Tensor, batch_size: int,
                   generator: torch.Generator | None = None) -> list[float]:
    """Lecture 3's sweep: one fresh model, step i uses lrs[i] (exponentially increasing); loss per step."""
    params = model.parameters()
    losses = []
    for lr in lrs.tolist():
        ix = torch.randint(0, len(X), (batch_size,), generator=generator).to(X.device)
        loss = F.cross_entropy(model(X[ix]), Y[ix])
        for p in params:
            p.grad = None
        loss.backward()
        sgd_step(params, lr)
        losses.append(loss.item() if math.isfinite(loss.item()) else float("inf"))
    return losses


def pick_lr(lrs: torch.Tensor, losses: list[float], window: int = 50) -> float:
    """The learning rate at the bottom of the (moving-average smoothed) sweep curve: the largest lr that
    still lowers the loss fastest, before the curve turns up and training becomes unstable."""
    loss = torch.tensor(losses).nan_to_num(posinf=1e9).clamp(max=1e9)
    smooth = F.avg_pool1d(loss[None, None], window, stride=1, padding=0)[0, 0]  # (n - window + 1,)
    i = int(smooth.argmin()) + window // 2
    return float(lrs[i])


@torch.no_grad()
def sample(model: Sequential, n: int, block_size: int, itos: dict[int, str], max_len: int = 30,
           generator: torch.Generator | None = None) -> list[str]:
    """Autoregressive generation: feed the last block_size chars, sample the next, stop at '.'. n names at once."""
    model.eval()
    context = torch.zeros((n, block_size), dtype=torch.long)  # (n, block_size): all '.'
    out = torch.zeros((n, 0), dtype=torch.long)
    done = torch.zeros(n, dtype=torch.bool)
    for _ in range(max_len):
        probs = F.softmax(model(context.to(model.device)), dim=-1).cpu()  # (n, vocab): sampled on the CPU
        ix = torch.multinomial(probs, 1, generator=generator)  # (n, 1)
        ix[done] = 0
        out = torch.cat([out, ix], dim=1)
        done |= ix[:, 0] == 0
        context = torch.cat([context[:, 1:], ix], dim=1)
        if done.all():
            break
    model.train()
    return ["".join(itos[i] for i in row.tolist()).split(".")[0] for row in out]
