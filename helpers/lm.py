"""Language-model plumbing shared by Lectures 7-10: batches, the training loop with nanoGPT's schedule,
evaluation in nats per token and bits per character, seeded text generation and the demo panel.

Losses are natural-log cross-entropies (nats per token). To compare models with different tokenizers we
report bits per character: total nats over the validation text / ln 2 / number of characters.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass, field

import torch

from .nn.optim import cosine_lr  # nanoGPT's schedule: warmup, cosine decay, flat


def split(ids, frac: float = 0.9) -> tuple[torch.Tensor, torch.Tensor]:
    """First `frac` of the token ids for training, the rest for validation (nanoGPT's 90/10 split)."""
    if not 0.0 < frac < 1.0:
        raise ValueError(f"frac must be in (0, 1), got {frac!r}")
    data = torch.as_tensor(ids, dtype=torch.long)  # (N,)
    n = int(frac * len(data))
    return data[:n], data[n:]


def get_batch(data: torch.Tensor, block_size: int, batch_size: int,
              generator: torch.Generator | None = None, device=None) -> tuple[torch.Tensor, torch.Tensor]:
    """Random windows: inputs x (B, T) and next-token targets y (B, T), y[:, t] = data[i + t + 1]."""
    if len(data) <= block_size:
        raise ValueError(f"need more than block_size={block_size} tokens, have {len(data)}")
    ix = torch.randint(len(data) - block_size, (batch_size,), generator=generator)  # (B,)
    x = torch.stack([data[i:i + block_size] for i in ix.tolist()])  # (B, T)
    y = torch.stack([data[i + 1:i + 1 + block_size] for i in ix.tolist()])  # (B, T)
    return (x, y) if device is None else (x.to(device), y.to(device))


@torch.no_grad()
def estimate_loss(model, data: torch.Tensor, block_size: int, batch_size: int, iters: int,
                  generator: torch.Generator | None = None, device=None) -> float:
    """Mean loss over `iters` random batches (nanoGPT's `estimate_loss`): quick, a little noisy."""
    was_training = model.training
    model.eval()
    losses = [model(*get_batch(data, block_size, batch_size, generator, device))[1].item() for _ in range(iters)]
    model.train(was_training)
    return sum(losses) / len(losses)


@torch.no_grad()
def evaluate_nll(model, data: torch.Tensor, block_size: int, batch_size: int = 32, device=None) -> float:
    """Total nats over ALL tokens of `data` (non-overlapping windows of block_size): deterministic.

    Each window predicts data[i+1 : i+1+T] from data[i : i+T], so every token but the first is scored once.
    """
    was_training = model.training
    model.eval()
    device = device or next(model.parameters()).device
    n = (len(data) - 1) // block_size * block_size  # scored tokens in whole windows
    x = data[:n].view(-1, block_size)  # (W, T)
    y = data[1:n + 1].view(-1, block_size)  # (W, T)
    total = 0.0
    for i in range(0, len(x), batch_size):
        logits, _ = model(x[i:i + batch_size].to(device))  # (b, T, V)
        total += torch.nn.functional.cross_entropy(logits.flatten(0, 1).float(), y[i:i + batch_size].to(device).flatten(),
                                                   reduction="sum").item()
    rest = data[n:]  # the tail shorter than a window
    if len(rest) > 1:
        logits, _ = model(rest[:-1].view(1, -1).to(device))
        total += torch.nn.functional.cross_entropy(logits[0].float(), rest[1:].to(device), reduction="sum").item()
    model.train(was_training)
    return total


def bits_per_char(total_nats: float, n_chars: int) -> float:
    """Nats summed over a text -> bits per character of that text."""
    return total_nats / math.log(2) / n_chars


@dataclass
class TrainConfig:
    """nanoGPT's knobs (defaults: its shakespeare_char CPU 'baby' recipe)."""

    max_iters: int = 2000
    batch_size: int = 12
    block_size: int = 64
    lr: float = 1e-3
    min_lr: float = 1e-4
    warmup_iters: int = 100
    lr_decay_iters: int | None = None  # None: = max_iters
    weight_decay: float = 0.1
    betas: tuple = (0.9, 0.99)
    grad_clip: float = 1.0
    eval_interval: int = 0  # 0: evaluate only at the end
    eval_iters: int = 20


@dataclass
class TrainResult:
    train_losses: list = field(default_factory=list)  # one per iteration
    evals: list = field(default_factory=list)  # (iter, train loss, val loss)
    seconds: float = 0.0


def train(model, train_data: torch.Tensor, val_data: torch.Tensor, cfg: TrainConfig,
          seed: int = 0, progress: bool = True, device=None) -> TrainResult:
    """nanoGPT's loop: AdamW (decay on matrices), warmup + cosine lr, grad-norm clipping, periodic eval."""
    from .progress import progress_bar

    device = device or next(model.parameters()).device
    gen = torch.Generator().manual_seed(seed)  # batches: independent of the global RNG
    eval_gen = torch.Generator().manual_seed(seed + 1)
    opt = model.configure_optimizer(cfg.lr, cfg.weight_decay, cfg.betas)
    decay_iters = cfg.lr_decay_iters or cfg.max_iters
    out = TrainResult()
    model.train()
    t0 = time.perf_counter()
    bar = progress_bar(range(cfg.max_iters), disable=not progress, mininterval=1.0, leave=False)
    for it in bar:
        if cfg.eval_interval and it % cfg.eval_interval == 0 and it > 0:
            out.evals.append((it, estimate_loss(model, train_data, cfg.block_size, cfg.batch_size, cfg.eval_iters, eval_gen, device),
                              estimate_loss(model, val_data, cfg.block_size, cfg.batch_size, cfg.eval_iters, eval_gen, device)))
        for group in opt.param_groups:
            group["lr"] = cosine_lr(it, decay_iters, cfg.lr, cfg.min_lr, cfg.warmup_iters)
        x, y = get_batch(train_data, cfg.block_size, cfg.batch_size, gen, device)
        _, loss = model(x, y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        if cfg.grad_clip:
            torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
        opt.step()
        out.train_losses.append(loss.item())
        if it % 50 == 0:
            bar.set_postfix(loss=f"{loss.item():.3f}")
    out.evals.append((cfg.max_iters,
                      estimate_loss(model, train_data, cfg.block_size, cfg.batch_size, cfg.eval_iters, eval_gen, device),
                      estimate_loss(model, val_data, cfg.block_size, cfg.batch_size, cfg.eval_iters, eval_gen, device)))
    out.seconds = time.perf_counter() - t0
    model.eval()
    return out


@torch.no_grad()
def generate_text(model, encode, decode, prompt: str, max_new_tokens: int, temperature: float = 1.0,
                  top_k: int | None = None, top_p: float | None = None, seed: int = 0) -> str:
    """Seeded sampling from a text prompt through any tokenizer (`encode` / `decode`); returns prompt + continuation."""
    device = next(model.parameters()).device
    idx = torch.tensor([encode(prompt)], dtype=torch.long, device=device)  # (1, T)
    gen = torch.Generator(device=device).manual_seed(seed)
    out = model.generate(idx, max_new_tokens, temperature, top_k, top_p, generator=gen)
    return decode(out[0].tolist())


def demo_panel(generators: dict, prompt: str = "ROMEO:", max_new_tokens: int = 200, show_widgets: bool | None = None):
    """Phase 5's playground: prompt, model, temperature, top-k -> a sample.

    `generators` maps a model name to `fn(prompt, max_new_tokens, temperature, top_k, seed) -> str`.
    Shows an ipywidgets panel when available (live only in a running kernel) and always prints one
    seeded sample per model, so a saved notebook shows output too. Returns the printed samples.
    `show_widgets=None`: the panel in an interactive session, none in a headless run (`make run`), where
    a widget would be saved as its useless text fallback.
    """
    from .progress import headless

    samples = {name: fn(prompt, max_new_tokens, 0.8, 20, 0) for name, fn in generators.items()}
    for name, text in samples.items():
        print(f"--- {name} (temperature 0.8, top-k 20, seed 0) ---\n{text}\n")
    if show_widgets is None:
        show_widgets = not headless()
    if not show_widgets:
        print("(headless run: the interactive panel appears when this cell runs in JupyterLab)")
        return samples
    try:
        import ipywidgets as w
        from IPython.display import display
    except ImportError:
        print("(ipywidgets is not installed: the samples above are the demo)")
        return samples
    box = w.Textarea(value=prompt, description="prompt")
    model = w.Dropdown(options=list(generators), description="model")
    temperature = w.FloatSlider(value=0.8, min=0.0, max=2.0, step=0.1, description="temperature")
    top_k = w.IntSlider(value=20, min=1, max=100, description="top-k")
    seed = w.IntText(value=0, description="seed")
    button = w.Button(description="generate")
    out = w.Output()

    def on_click(_):
        out.clear_output()
        with out:
            print(generators[model.value](box.value, max_new_tokens, temperature.value, top_k.value, seed.value))

    button.on_click(on_click)
    display(w.VBox([box, w.HBox([model, temperature]), w.HBox([top_k, seed, button]), out]))
    return samples
