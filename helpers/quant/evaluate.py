"""Measuring a quantized LLM: WikiText-2 perplexity, model bytes, and the layer-by-layer calibration pass.

Perplexity follows the GPTQ paper's protocol (Frantar et al. 2023, §4): the test split as one token stream, cut into
non-overlapping windows of `seqlen` tokens, every token after the first of a window scored, ppl = exp(mean NLL). All
methods are scored on the same windows, so their differences are paired. `score_from` and `bos_id` give llama.cpp's
`llama-perplexity` protocol instead: each chunk's first token replaced by BOS, only its second half scored.

Calibration (GPTQ, AWQ, SmoothQuant): random `seqlen`-token windows of the WikiText-2 *train* split (GPTQ used C4;
the course has WikiText-2 offline). `sequential()` is the loop all three share: the calibration batch enters decoder
layer 0; for each layer, the method looks at (and may change) the layer, then the batch goes through the changed
layer to become the next layer's input — so each layer is calibrated on what the already-quantized layers feed it.
"""
from __future__ import annotations

import math
import os
import resource
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import torch

from ..data import dataset, fetch
from ..progress import progress_bar


# --------------------------------------------------------------------------------------------------
# Data
# --------------------------------------------------------------------------------------------------

@lru_cache(maxsize=4)
def _tokens(tok_name: str, split: str, tok) -> torch.Tensor:
    """Token ids of one split, cached beside the tokenizer's files (`llm.load()`'s cache folder) when there is one."""
    declared = next(f.checksum for f in dataset("wikitext-2").files if f.name == f"{split}.txt")
    cached = Path(tok_name) / f"wikitext2-{split}-{declared[-12:]}.pt" if Path(tok_name).is_dir() else None
    if cached is not None and cached.is_file():
        return torch.load(cached)
    lines = (fetch("wikitext-2") / f"{split}.txt").read_text(encoding="utf-8").splitlines(keepends=True)
    ids = torch.tensor([i for line in tok(lines, add_special_tokens=False)["input_ids"] for i in line])
    if cached is not None:  # lines never merge across a newline in this BPE: the same ids as the whole text
        tmp = cached.with_suffix(f".tmp{os.getpid()}")
        torch.save(ids, tmp)
        os.replace(tmp, cached)
    return ids


def wikitext2_tokens(tok, split: str = "test") -> torch.Tensor:
    """The whole WikiText-2 `split` (train / valid / test) as one stream of token ids, shape (N,)."""
    if split not in ("train", "valid", "test"):
        raise ValueError(f"split must be train, valid or test; got {split!r}")
    return _tokens(tok.name_or_path, split, tok)


def calibration_windows(tok, n: int = 32, seqlen: int = 256, seed: int = 0) -> torch.Tensor:
    """`n` random windows of `seqlen` tokens from WikiText-2 train, shape (n, seqlen)."""
    ids = wikitext2_tokens(tok, "train")
    g = torch.Generator().manual_seed(seed)
    starts = torch.randint(0, len(ids) - seqlen, (n,), generator=g)
    return torch.stack([ids[s:s + seqlen] for s in starts.tolist()])


def eval_windows(tokens: torch.Tensor, seqlen: int = 256, n_windows: int | None = None) -> torch.Tensor:
    """The first `n_windows` non-overlapping windows of the stream (all of them when None), shape (n, seqlen)."""
    total = len(tokens) // seqlen
    n = total if n_windows is None else n_windows
    if not 1 <= n <= total:
        raise ValueError(f"{len(tokens)} tokens hold {total} windows of {seqlen}; asked for {n_windows}")
    return tokens[: n * seqlen].view(n, seqlen)


# --------------------------------------------------------------------------------------------------
# Perplexity
# --------------------------------------------------------------------------------------------------

@dataclass
class Perplexity:
    ppl: float
    nll: float  # mean negative log-likelihood per scored token (nats)
    stderr: float  # standard error of `nll` over windows
    tokens: int  # scored tokens
    window_nll: torch.Tensor  # (n,) mean NLL of each window: paired comparisons between methods use these

    def __str__(self):
        return f"{self.ppl:.3f}"


@torch.inference_mode()
def perplexity(model, windows: torch.Tensor, score_from: int = 0, bos_id: int | None = None,
               batch_size: int = 8, desc: str | None = None) -> Perplexity:
    """exp(mean NLL) of `model` on `windows` (n, T): each window scored from position `score_from` on.

    score_from=0: every next-token prediction in the window (GPTQ protocol). bos_id: the first token of each
    window is replaced by it before the forward (llama.cpp's protocol, with score_from = T // 2).
    """
    if windows.dim() != 2:
        raise ValueError(f"windows must be (n, T); got shape {tuple(windows.shape)}")
    x = windows.clone()
    if bos_id is not None:
        x[:, 0] = bos_id
    per_window = []
    bar = progress_bar(total=len(x), desc=desc or "perplexity", disable=desc is None)
    for b in range(0, len(x), batch_size):
        xb = x[b:b + batch_size]
        logits = model(xb).logits[:, score_from:-1].float()  # (B, T-1-score_from, V)
        target = windows[b:b + batch_size, score_from + 1:]  # (B, T-1-score_from)
        nll = torch.nn.functional.cross_entropy(logits.transpose(1, 2), target, reduction="none")
        per_window.append(nll.mean(dim=1))
        bar.update(len(xb))
    bar.close()
    w = torch.cat(per_window).double()  # (n,) equal-sized windows: the mean of means is the token mean
    nll = w.mean().item()
    stderr = (w.std().item() / math.sqrt(len(w))) if len(w) > 1 else float("nan")
    return Perplexity(math.exp(nll), nll, stderr, int(w.numel() * (windows.shape[1] - 1 - score_from)), w)


# --------------------------------------------------------------------------------------------------
# Size and memory
# --------------------------------------------------------------------------------------------------

def linear_layers(model) -> dict[str, torch.nn.Linear]:
    """The decoder's nn.Linear layers by name (q, k, v, o, gate, up, down of every layer) — what the methods quantize.

    The tied embedding / LM head is left out: every method here keeps it in 16 bits, as GPTQ and AWQ do."""
    return {name: m for name, m in model.named_modules()
            if isinstance(m, torch.nn.Linear) and ".layers." in name}


def model_bytes(model, bits: int | None = None, group_size: int | None = None, scale_bytes: int = 2,
                other_bytes: int = 2) -> int:
    """Bytes to store `model` with its decoder linears at `bits` (codes + one scale and one `bits`-bit zero per group
    of `group_size` inputs, or per output row when None) and every other parameter at `other_bytes` bytes.
    bits=None: everything at `other_bytes`."""
    params = {id(p): p for p in model.parameters()}
    linears = linear_layers(model)
    quantized = {id(m.weight) for m in linears.values()} if bits is not None else set()
    total = sum(p.numel() * other_bytes for k, p in params.items() if k not in quantized)
    for m in linears.values() if bits is not None else []:
        out_f, in_f = m.weight.shape
        groups = out_f * (in_f // group_size if group_size else 1)
        total += math.ceil(out_f * in_f * bits / 8) + groups * scale_bytes + math.ceil(groups * bits / 8)
    return total


def peak_rss_mb() -> float:
    """This process's peak resident memory so far, in MB: Linux's VmHWM, else ru_maxrss. (ru_maxrss survives exec,
    so a child started from a big notebook kernel would report the kernel's peak; VmHWM starts afresh.)"""
    try:
        with open("/proc/self/status") as f:
            return next(int(line.split()[1]) for line in f if line.startswith("VmHWM:")) / 1024
    except (OSError, StopIteration):
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


# --------------------------------------------------------------------------------------------------
# The layer-by-layer calibration pass
# --------------------------------------------------------------------------------------------------

class _Captured(Exception):
    pass


@torch.inference_mode()
def layer_kwargs(model, seqlen: int) -> dict:
    """The keyword arguments the decoder passes each layer (rotary cos/sin, mask, positions) for `seqlen` tokens."""
    layer0 = model.model.layers[0]
    seen = {}

    def catch(module, args, kwargs):
        seen.update(kwargs)
        raise _Captured

    handle = layer0.register_forward_pre_hook(catch, with_kwargs=True)
    try:
        model(torch.zeros(1, seqlen, dtype=torch.long))
    except _Captured:
        pass
    finally:
        handle.remove()
    return {k: v for k, v in seen.items() if k not in ("past_key_values", "use_cache")}


@torch.inference_mode()
def run_layer(layer, hidden: torch.Tensor, kwargs: dict, batch_size: int = 8) -> torch.Tensor:
    """One decoder layer on the calibration batch `hidden` (n, T, C), a few windows at a time."""
    out = [layer(hidden[b:b + batch_size], **kwargs) for b in range(0, len(hidden), batch_size)]
    return torch.cat([o[0] if isinstance(o, tuple) else o for o in out])


def sequential(model, calib: torch.Tensor, fn, desc: str = "layers") -> list:
    """Call `fn(i, layer, hidden, kwargs)` for each decoder layer in order; return the list of what it returned.

    hidden (n, T, C) is the calibration batch as it enters layer i — through layers 0..i-1 *as `fn` left them*.
    `fn` may change the layer in place (quantize it); `run_layer(layer, hidden, kwargs)` gives its outputs."""
    with torch.inference_mode():
        hidden = model.model.embed_tokens(calib)  # (n, T, C)
    kwargs = layer_kwargs(model, calib.shape[1])
    results = []
    for i, layer in enumerate(progress_bar(model.model.layers, desc=desc)):
        results.append(fn(i, layer, hidden, kwargs))
        hidden = run_layer(layer, hidden, kwargs)
    return results
