"""Lecture 9's efficiency half (build-nanogpt): what each of Karpathy's speed-ups buys on this machine.

Karpathy takes a GPT-2 (124M) training step from ~1000 ms to ~93 ms on an A100 with a ladder of changes:
TF32 matmuls, bf16 autocast, `torch.compile`, flash attention, a "nice" vocabulary size (50257 -> 50304),
fused AdamW, and gradient accumulation to reach a 0.5M-token batch. `efficiency_ladder` climbs the same
ladder on a small GPT (the course's `helpers.models.gpt.GPT`) fed GPT-2 token ids of tiny Shakespeare, and
measures tokens/s of a full training step (forward, backward, optimizer) after each change. Changes are
CUMULATIVE, as in the video: each row keeps every change above it. Changes that need a GPU (TF32) are rows
that say so instead of silently disappearing. Two checks show that the changes which must not alter the
mathematics do not: gradient accumulation gives the one-big-batch gradient (`check_grad_accumulation`)
and fused AdamW gives the for-loop AdamW's parameters (`check_fused_adamw`).
"""
from __future__ import annotations

import copy
import functools
import time
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, replace

import torch

from .device import device as default_device
from .lm import get_batch, split
from .models.gpt import GPT, GPTConfig
from .progress import progress_bar
from .session import P, profile

GPT2_VOCAB = 50257  # 50,000 BPE merges + 256 byte tokens + <|endoftext|>

# The small GPT of the quick ladder: GPT-2's vocabulary and layout, 4 layers of 128 dims, context 128.
LADDER_CONFIG = GPTConfig(block_size=128, vocab_size=GPT2_VOCAB, n_layer=4, n_head=4, n_embd=128, dropout=0.0)
# An even smaller one for the two correctness checks (they compare numbers, not speed).
CHECK_CONFIG = GPTConfig(block_size=64, vocab_size=GPT2_VOCAB, n_layer=2, n_head=4, n_embd=64, dropout=0.0)


def padded_vocab(v: int, multiple: int = 64) -> int:
    """The smallest multiple of `multiple` >= v: 50257 -> 50304 = 64 * 786.

    GPU matmul kernels work in tiles of powers of two; an odd dimension like 50257 runs a slow extra pass for
    the ragged edge. The 47 extra tokens never occur in the data, so training just drives their logits down.
    """
    if int(v) < 1 or int(multiple) < 1:
        raise ValueError(f"need v >= 1 and multiple >= 1, got v={v!r}, multiple={multiple!r}")
    return -(-int(v) // int(multiple)) * int(multiple)


@functools.lru_cache(maxsize=1)
def shakespeare_gpt2_tokens() -> torch.Tensor:
    """Tiny Shakespeare as GPT-2 token ids (tiktoken "gpt2"), the first 90% (the training split): (N,) int64."""
    from .data import load_text, tiktoken_encoding

    ids = tiktoken_encoding("gpt2").encode_ordinary(load_text("tinyshakespeare"))
    return split(ids)[0]


# ---- the pieces a recipe switches ---------------------------------------------------------------------

def fused_adamw_supported(device=None) -> bool:
    """Whether `torch.optim.AdamW(fused=True)` constructs and steps on `device` (CUDA; CPU since torch 2.4)."""
    device = torch.device(device or "cpu")
    try:
        p = torch.nn.Parameter(torch.zeros(2, device=device))
        p.grad = torch.ones(2, device=device)
        torch.optim.AdamW([p], lr=1e-3, fused=True).step()
        return True
    except (RuntimeError, ValueError, TypeError):
        return False


def make_adamw(model: GPT, lr: float = 6e-4, impl: str = "for-loop", weight_decay: float = 0.1,
               betas=(0.9, 0.95)) -> torch.optim.AdamW:
    """AdamW over `model.configure_optimizer`'s groups (decay on matrices only), run as `impl`:

    "for-loop" (one small kernel sequence per parameter), "foreach" (the same maths batched over lists of
    tensors) or "fused" (one kernel updating every parameter in a single pass).
    """
    flags = {"for-loop": dict(foreach=False, fused=False), "foreach": dict(foreach=True), "fused": dict(fused=True)}
    if impl not in flags:
        raise ValueError(f"impl must be one of {sorted(flags)}, got {impl!r}")
    groups = [{"params": g["params"], "weight_decay": g["weight_decay"]}
              for g in model.configure_optimizer(lr, weight_decay, betas).param_groups]
    return torch.optim.AdamW(groups, lr=lr, betas=betas, **flags[impl])


@contextmanager
def tf32_matmuls(enabled: bool):
    """Inside the block, fp32 matmuls on TF32 tensor cores (10-bit mantissa inputs, fp32 sums); restored after."""
    before = torch.get_float32_matmul_precision()
    if enabled:
        torch.set_float32_matmul_precision("high")
    try:
        yield
    finally:
        torch.set_float32_matmul_precision(before)


@contextmanager
def saved_activation_bytes(model: torch.nn.Module, out: list):
    """Count the bytes autograd keeps for backward (activations, not parameters) during the block; appended to `out`.

    Every tensor saved for backward passes through a pack hook; storages are counted once each.
    """
    params = {p.untyped_storage().data_ptr() for p in model.parameters()}
    seen = {}

    def pack(t):
        s = t.untyped_storage()
        if s.data_ptr() not in params:
            seen[s.data_ptr()] = s.nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        yield
    out.append(sum(seen.values()))


# ---- one training step under a recipe ----------------------------------------------------------------

@dataclass(frozen=True)
class Recipe:
    """Which of the ladder's changes are on."""

    vocab_size: int = GPT2_VOCAB
    adamw: str = "for-loop"  # "for-loop", "foreach" or "fused"
    flash: bool = False  # F.scaled_dot_product_attention instead of softmax(q k^T / sqrt(d)) v spelled out
    tf32: bool = False
    bf16: bool = False  # torch.autocast(dtype=torch.bfloat16) around the forward pass
    compile: bool = False
    accum: int = 1  # micro-batches per optimizer step (same total batch)


def train_step(model, opt, x: torch.Tensor, y: torch.Tensor, r: Recipe, measure: list | None = None) -> float:
    """One optimizer step on the batch x, y (B, T), as `r.accum` micro-batches whose gradients add up.

    Each micro-batch loss is a mean over its B/accum rows; dividing it by `accum` makes the summed gradient
    the gradient of the mean over all B rows, exactly as one big batch would give (build-nanogpt's
    `loss = loss / grad_accum_steps`). Returns the batch's mean loss.
    """
    opt.zero_grad(set_to_none=True)
    total = 0.0
    for xm, ym in zip(x.chunk(r.accum), y.chunk(r.accum)):  # each (B/accum, T)
        counter = saved_activation_bytes(model, measure) if measure is not None else nullcontext()
        with counter, torch.autocast(device_type=x.device.type, dtype=torch.bfloat16, enabled=r.bf16):
            out = model(xm, ym) if r.flash else model(xm, ym, return_attn=True)  # manual path keeps the maps
            loss = out[1] / r.accum
        loss.backward()
        total += loss.item()
    opt.step()
    return total


def call_times(fn, reps: int, cuda: bool = False) -> list[float]:
    """Seconds taken by each of `reps` calls of `fn()` (on CUDA, waiting for the GPU to finish)."""
    times = []
    for _ in range(reps):
        if cuda:
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        fn()
        if cuda:
            torch.cuda.synchronize()
        times.append(time.perf_counter() - t0)
    return times


def time_recipe(r: Recipe, base: GPT, x: torch.Tensor, y: torch.Tensor, steps: int, warmup: int = 1) -> dict:
    """Train a copy of `base` under recipe `r` for `warmup` untimed steps, then `steps` timed ones.

    tokens/s comes from the fastest timed step (as `timeit` does: other processes can only add time, and on a
    shared CPU they do); activation bytes from the first warm-up step, which is untimed.
    """
    model = copy.deepcopy(base).train()
    opt = make_adamw(model, impl=r.adamw)
    with tf32_matmuls(r.tf32):
        step_model = torch.compile(model) if r.compile else model
        memory = []
        for i in range(max(1, warmup)):  # first steps: allocations, optimizer state, compilation
            train_step(step_model, opt, x, y, r, measure=memory if i == 0 and not r.compile else None)
        times = call_times(lambda: train_step(step_model, opt, x, y, r), steps, x.is_cuda)
    return {"tokens_per_s": x.numel() / min(times), "steps_ms": [round(1000 * t, 1) for t in times],
            "activation_mb": memory[0] / 2**20 if memory else None}


def time_ms(fn, reps: int = 5, cuda: bool = False) -> float:
    """The fastest of `reps` calls of `fn()` after one untimed call, in milliseconds."""
    fn()
    return 1000 * min(call_times(fn, reps, cuda))


def optimizer_step_ms(base: GPT, impl: str, reps: int = 5) -> float:
    """One AdamW step alone (`impl` as in `make_adamw`) on a copy of `base` holding random gradients."""
    model = copy.deepcopy(base)
    gen = torch.Generator().manual_seed(0)
    for p in model.parameters():
        p.grad = (1e-3 * torch.randn(p.shape, generator=gen)).to(p.device)
    return time_ms(make_adamw(model, impl=impl).step, reps, next(model.parameters()).is_cuda)


def attention_ms(base: GPT, x: torch.Tensor, flash: bool, reps: int = 5) -> float:
    """Forward + backward of `base`'s attention sublayers alone (all n_layer of them), spelled out or SDPA."""
    attn = copy.deepcopy(base.transformer.h[0].attn)  # its gradients must not land in `base`
    h = torch.randn(*x.shape, base.config.n_embd, device=x.device, requires_grad=True)  # (B, T, C)

    def run():
        attn(h, return_attn=not flash)[0].sum().backward()

    return base.config.n_layer * time_ms(run, reps, x.is_cuda)


# ---- the ladder ----------------------------------------------------------------------------------------

def cpu_bf16_support() -> str:
    """Whether this CPU multiplies bf16 natively (AVX512-BF16 / AMX flags in /proc/cpuinfo) or emulates it."""
    try:
        with open("/proc/cpuinfo") as f:
            flags = next((line.split(":", 1)[1].split() for line in f if line.startswith("flags")), [])
    except OSError:
        return "CPU bf16 support unknown"
    native = [name for name in ("avx512_bf16", "amx_bf16") if name in flags]
    return f"this CPU has {' and '.join(native)}" if native else "no bf16 instructions on this CPU: emulated"


def ladder_steps(device, vocab_size: int, accum: int, micro: int, compile: bool) -> list[tuple[str, dict, str]]:
    """(change, the recipe fields it switches on, note), in the order they are applied; a note starting
    with "skipped:" says why the change cannot run here."""
    cuda = torch.device(device).type == "cuda"
    v = padded_vocab(vocab_size)
    return [
        ("baseline: fp32, attention spelled out", {},
         f"fp32 everywhere, softmax(q k^T / sqrt(d)) v written out, vocab {vocab_size}, for-loop AdamW"),
        (f"vocab padded {vocab_size} -> {v}", {"vocab_size": v},
         f"wte / lm_head get {v} = 64 x {v // 64} rows; the {v - vocab_size} extra tokens never occur"),
        ("fused AdamW", {"adamw": "fused"},
         "torch.optim.AdamW(fused=True): one kernel updates every parameter" if fused_adamw_supported(device)
         else f"skipped: fused AdamW unsupported on {device}"),
        ("flash attention", {"flash": True},
         "F.scaled_dot_product_attention(is_causal=True): the (B, nh, T, T) maps are never stored"),
        ("TF32 matmuls", {"tf32": True},
         "torch.set_float32_matmul_precision('high'): fp32 matmuls on TF32 tensor cores" if cuda
         else "skipped: needs CUDA (TF32 is a GPU tensor-core format)"),
        ("bf16 autocast", {"bf16": True},
         "forward under torch.autocast(bfloat16); weights, gradients and AdamW state stay fp32"
         + ("" if cuda else f" ({cpu_bf16_support()})")),
        ("torch.compile", {"compile": True},
         "torch.compile(model): fused kernels, fewer trips to memory; compilation excluded (warm-up)" if compile
         else "skipped: compile=False (compiling takes longer than this whole ladder)"),
        (f"gradient accumulation x{accum}", {"accum": accum},
         f"same total batch as {accum} micro-batches of {micro} rows, each loss / {accum}"),
    ]


def efficiency_ladder(steps: int | None = None, device=None, seed: int = 0, config: GPTConfig | None = None,
                      batch_size: int | None = None, accum: int = 2, compile: bool = False,
                      warmup: int = 1, progress: bool = True) -> list[dict]:
    """Tokens/s of a GPT training step as Lecture 9's changes are switched on one after another (cumulative).

    Every row trains a copy of the same initial model on the same batch of `batch_size` x block_size GPT-2
    tokens of tiny Shakespeare: `warmup` untimed steps, then `steps` timed ones. Rows:
      change, tokens_per_s (fastest timed step), speedup (vs the baseline row), note,
      activation_mb (what autograd keeps for backward per micro-batch; None under torch.compile),
      steps_ms (every timed step: on a shared CPU they spread by 10-40%, so read small ratios as noise).
    A change that cannot run here (TF32 off CUDA; torch.compile unless `compile=True`: compiling takes longer
    than the whole ladder on a CPU) is a row with tokens_per_s and speedup None and a note saying why.
    Sizes: LADDER_CONFIG, batch 4, P(quick=3, full=10) timed steps; the full profile on a GPU with > 60 GB
    uses GPT-2 (124M) with batch 16 x 1024, as in the video.
    """
    device = torch.device(device or default_device())
    cuda = device.type == "cuda"
    full_gpu = cuda and profile() == "full"
    config = config or (GPTConfig.gpt2() if full_gpu else LADDER_CONFIG)
    if batch_size is None:  # the video's 16 x 1024 needs ~40 GB in fp32 with attention spelled out
        big = full_gpu and torch.cuda.get_device_properties(device).total_memory > 60 * 2**30
        batch_size = 16 if big else 4
    steps = steps or P(quick=3, full=10)
    if batch_size % accum:
        raise ValueError(f"batch_size={batch_size} is not divisible by accum={accum}")
    config = replace(config, dropout=0.0)

    data = shakespeare_gpt2_tokens()
    x, y = get_batch(data, config.block_size, batch_size, torch.Generator().manual_seed(seed), device)  # (B, T)
    bases = {}  # vocab size -> the initial model every row copies

    def base(vocab_size):
        if vocab_size not in bases:
            torch.manual_seed(seed)
            bases[vocab_size] = GPT(replace(config, vocab_size=vocab_size)).to(device)
        return bases[vocab_size]

    recipe, rows = Recipe(vocab_size=config.vocab_size), []
    steps_here = ladder_steps(device, config.vocab_size, accum, batch_size // accum, compile)
    for change, fields, note in progress_bar(steps_here, desc="efficiency ladder", disable=not progress):
        if note.startswith("skipped:"):
            rows.append({"change": change, "tokens_per_s": None, "speedup": None, "note": note,
                         "activation_mb": None, "steps_ms": []})
            continue
        before, recipe = recipe, replace(recipe, **fields)  # cumulative: every change above stays on
        m = time_recipe(recipe, base(recipe.vocab_size), x, y, steps, warmup)
        previous = next((r for r in reversed(rows) if r["tokens_per_s"]), None)
        if previous:
            note += f"; x{m['tokens_per_s'] / previous['tokens_per_s']:.2f} vs the row above it"
        step_ms = 1000 * x.numel() / m["tokens_per_s"]
        if recipe.adamw != before.adamw:  # a small part of a step: show the part itself
            a, b = (optimizer_step_ms(base(recipe.vocab_size), r.adamw) for r in (before, recipe))
            note += f"; the optimizer step alone: {a:.1f} -> {b:.1f} ms of a {step_ms:.0f} ms step"
        if recipe.flash != before.flash:
            a, b = (attention_ms(base(recipe.vocab_size), x, r.flash) for r in (before, recipe))
            note += (f"; attention alone (fwd+bwd, {config.n_layer} layers): {a:.1f} -> {b:.1f} ms"
                     f" of a {step_ms:.0f} ms step")
        rows.append({"change": change, "tokens_per_s": m["tokens_per_s"],
                     "speedup": m["tokens_per_s"] / rows[0]["tokens_per_s"] if rows else 1.0,
                     "note": note, "activation_mb": m["activation_mb"], "steps_ms": m["steps_ms"]})
    return rows


def ladder_table(rows: list[dict]) -> tuple[list, list]:
    """(header, cells) for `md_table`: skipped rows show a dash."""
    def fmt(v, spec):
        return "—" if v is None else format(v, spec)

    header = ["change (cumulative)", "tokens/s", "speedup", "activation MB / micro-batch", "note"]
    return header, [[r["change"], fmt(r["tokens_per_s"], ",.0f"), fmt(r["speedup"], ".2f"),
                     fmt(r["activation_mb"], ",.1f"), r["note"]] for r in rows]


# ---- the two changes that must not change the mathematics -------------------------------------------

def _check_setup(config: GPTConfig | None, batch_size: int, seed: int, device):
    """A fresh model (dropout off) and one batch (B, T) of GPT-2 tokens, both from `seed`."""
    config = config or CHECK_CONFIG
    if config.dropout:
        raise ValueError("the checks need dropout=0: with dropout each micro-batch draws different masks")
    device = torch.device(device or default_device())
    torch.manual_seed(seed)
    model = GPT(config).to(device).train()
    x, y = get_batch(shakespeare_gpt2_tokens(), config.block_size, batch_size,
                     torch.Generator().manual_seed(seed), device)  # (B, T)
    return model, x, y


def check_grad_accumulation(config: GPTConfig | None = None, micro: int = 4, batch_size: int = 8, seed: int = 0,
                            device=None, normalize: bool = True) -> float:
    """max |grad(micro micro-batches, each loss / micro, summed) - grad(the whole batch at once)| over all weights.

    At fp32 this is rounding (~1e-8): accumulation is exact. With `normalize=False` (forgetting the
    `/ micro`, the bug Karpathy warns about) the accumulated gradient is `micro` times too large.
    """
    if batch_size % micro:
        raise ValueError(f"batch_size={batch_size} is not divisible by micro={micro}")
    model, x, y = _check_setup(config, batch_size, seed, device)
    model.zero_grad(set_to_none=True)
    model(x, y)[1].backward()  # one batch: mean over B*T tokens
    whole = [p.grad.clone() for p in model.parameters()]
    model.zero_grad(set_to_none=True)
    for xm, ym in zip(x.chunk(micro), y.chunk(micro)):  # each (B/micro, T)
        loss = model(xm, ym)[1]
        (loss / micro if normalize else loss).backward()  # .grad += this micro-batch's share
    return max((p.grad - g).abs().max().item() for p, g in zip(model.parameters(), whole))


def check_fused_adamw(config: GPTConfig | None = None, steps: int = 3, lr: float = 6e-4, batch_size: int = 4,
                      seed: int = 0, device=None, same_grads: bool = True) -> float:
    """max |parameter after `steps` AdamW steps with fused=True - the same with the for-loop AdamW|.

    Two copies of one model; where fused AdamW is unsupported (`fused_adamw_supported(device)` is False) the
    fast copy uses foreach=True instead. Each step, both optimizers get the same gradients (the fast copy's,
    on a fresh batch), so the difference is the optimizers' arithmetic alone: rounding, ~1e-8 at fp32.
    With `same_grads=False` each copy computes its own gradients, and the network amplifies the first
    step's rounding differences (Adam divides by sqrt(v), so tiny gradients move weights by ~lr): ~1e-6.
    """
    model, x, y = _check_setup(config, batch_size, seed, device)
    twin = copy.deepcopy(model)
    fast = make_adamw(model, lr, "fused" if fused_adamw_supported(x.device) else "foreach")
    slow = make_adamw(twin, lr, "for-loop")
    gen = torch.Generator().manual_seed(seed + 1)
    for _ in range(steps):
        xb, yb = get_batch(shakespeare_gpt2_tokens(), x.size(1), batch_size, gen, x.device)  # (B, T)
        for m, opt in ((model, fast), (twin, slow)):
            opt.zero_grad(set_to_none=True)
            if m is model or not same_grads:
                m(xb, yb)[1].backward()
            else:
                for p, q in zip(model.parameters(), twin.parameters()):
                    q.grad = p.grad.clone()
            opt.step()
    return max((p - q).abs().max().item() for p, q in zip(model.parameters(), twin.parameters()))
