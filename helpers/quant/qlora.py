"""QLoRA with the libraries practitioners use: a frozen 4-bit NF4 base model + trainable low-rank adapters
(Dettmers, Pagnoni, Holtzman & Zettlemoyer, 2023, "QLoRA: Efficient Finetuning of Quantized LLMs").

The recipe of the paper, piece by piece, and the library that implements it here:
  1. 4-bit NormalFloat (NF4) storage of every decoder linear, blocks of 64 weights sharing one absmax scale (§3);
     double quantization: those scales themselves quantized to 8 bits in blocks of 256 (§3)      → bitsandbytes
     (`BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", ...)`, layers become `bnb.nn.Linear4bit`);
  2. the base weights are frozen; each target linear y = W x gets a LoRA adapter (Hu et al. 2021)
         y = dequant(W_nf4) x + (alpha / r) · B A x,      A (r, in), B (out, r), B = 0 at start     → peft;
     only A and B are trained: r · (in + out) parameters per target;
  3. paged optimizers (optimizer state in CUDA unified memory, evicted to CPU RAM under memory spikes)
                                                                                             → bitsandbytes.optim.
The training loop itself is plain torch below (no HF Trainer). Computation runs in `compute_dtype`: the 4-bit
weights are dequantized on the fly for every matmul; gradients flow through them to the adapters, never into them.

The task: English → German translation as chat instructions, built offline from Multi30k (Elliott et al. 2016).
SmolLM2-135M barely knows German (held-out answer perplexity 46); a minute of single-thread CPU training (12 steps
of 8 examples) brings it to 15 and turns English echoes into German-looking answers.
"""
from __future__ import annotations

import json
import math
import subprocess
import sys
import time
import warnings
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

from .. import llm
from ..data import load_multi30k
from ..progress import progress_bar
from ..session import ROOT

IGNORE = -100  # label of a token that is not scored (torch's cross_entropy ignore_index)
LLAMA_TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
SPLITS = ("train", "valid", "test")  # Multi30k: 29,000 / 1,014 / 1,000 pairs (test = test2016)


# --------------------------------------------------------------------------------------------------
# 1. Instruction data: "Translate to German: <en>" → "<de>", only the answer is scored
# --------------------------------------------------------------------------------------------------

@dataclass
class InstructionData:
    input_ids: torch.Tensor  # (n, T) prompt + answer, right-padded with `pad_id`
    labels: torch.Tensor  # (n, T) = input_ids on answer tokens, IGNORE on prompt and padding
    attention_mask: torch.Tensor  # (n, T) 1 on real tokens, 0 on padding
    pairs: list  # the n (english, german) pairs
    pad_id: int

    def __len__(self):
        return len(self.pairs)


def prompt_of(english: str) -> str:
    return f"Translate to German: {english}"


def _chat_ids(tok, english: str, german: str | None) -> list[int]:
    messages = [{"role": "user", "content": prompt_of(english)}]
    if german is not None:
        messages.append({"role": "assistant", "content": german})
    return tok.apply_chat_template(messages, add_generation_prompt=german is None, tokenize=True,
                                   return_dict=True)["input_ids"]


def instruction_data(tok, split: str = "train", n: int = 256, seed: int = 0, max_len: int = 64) -> InstructionData:
    """`n` random Multi30k `split` pairs (seed), each formatted with the tokenizer's chat template.

    Labels keep the assistant's answer and its end-of-turn token; the system prompt, the user turn and the
    assistant header are IGNORE, so training and `answer_perplexity` see the German answer only. Pairs longer than
    `max_len` tokens are skipped. Training uses "train"; held-out evaluation "test" (test2016) or "valid"."""
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS} (train for fine-tuning, test/valid held out); got {split!r}")
    pairs = load_multi30k()[split]  # (german, english)
    if not 1 <= n <= len(pairs):
        raise ValueError(f"n must be in 1..{len(pairs)} for Multi30k {split}; got {n}")
    order = torch.randperm(len(pairs), generator=torch.Generator().manual_seed(seed)).tolist()
    rows, chosen = [], []
    for i in order:
        de, en = pairs[i]
        prompt, full = _chat_ids(tok, en, None), _chat_ids(tok, en, de)
        if full[:len(prompt)] != prompt:
            raise RuntimeError("the chat template's generation prompt is not a prefix of the full conversation; "
                               "the answer tokens cannot be located")
        if len(full) > max_len:
            continue
        rows.append((full, len(prompt)))
        chosen.append((en, de))
        if len(rows) == n:
            break
    if len(rows) < n:
        raise ValueError(f"only {len(rows)} pairs of Multi30k {split} fit in max_len={max_len} tokens; raise max_len")
    pad_id = tok.pad_token_id if tok.pad_token_id is not None else tok.convert_tokens_to_ids("<|im_end|>")
    T = max(len(ids) for ids, _ in rows)
    input_ids = torch.full((n, T), pad_id, dtype=torch.long)
    labels = torch.full((n, T), IGNORE, dtype=torch.long)
    mask = torch.zeros((n, T), dtype=torch.long)
    for r, (ids, n_prompt) in enumerate(rows):
        input_ids[r, :len(ids)] = torch.tensor(ids)
        labels[r, n_prompt:len(ids)] = input_ids[r, n_prompt:len(ids)]
        mask[r, :len(ids)] = 1
    return InstructionData(input_ids, labels, mask, chosen, pad_id)


# --------------------------------------------------------------------------------------------------
# 2. The NF4 base model (bitsandbytes) and its LoRA adapters (peft)
# --------------------------------------------------------------------------------------------------

def load_4bit(path=None, double_quant: bool = True, compute_dtype: torch.dtype = torch.float32,
              cpu_inference_kernel: bool = False):
    """The model at `path` (default: the course LLM) with every linear stored as bitsandbytes NF4 (`Linear4bit`).

    The tied embedding / LM head stays float. On CPU bitsandbytes dequantizes in `compute_dtype` for each matmul
    (float32 and bfloat16 both work on CPU; float32 is the default here: no rounding of the activations).

    cpu_inference_kernel: on a CPU with AVX512-BF16, bitsandbytes 0.50.2 repacks a Linear4bit's codes, in place and
    for good, into a layout for its fast inference kernel the first time the layer runs in eval mode without
    grad. Training after that silently goes wrong (measured: 6 steps that take the answer loss from 3.59 to 0.94
    only reach 3.34 once an evaluation has run first). False (default) switches the repacking off, so a model can
    be evaluated, trained and evaluated again; True gives the faster inference-only model."""
    from transformers import AutoModelForCausalLM, BitsAndBytesConfig
    from transformers.utils import logging as hf_logging

    if compute_dtype not in (torch.float32, torch.bfloat16, torch.float16):
        raise TypeError(f"compute_dtype must be torch.float32, bfloat16 or float16; got {compute_dtype}")
    hf_logging.disable_progress_bar()
    config = BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4",
                                bnb_4bit_use_double_quant=double_quant, bnb_4bit_compute_dtype=compute_dtype)
    model = AutoModelForCausalLM.from_pretrained(path or llm.cache_dir(), quantization_config=config,
                                                 device_map="cpu", dtype=torch.float32)
    if not cpu_inference_kernel:
        for module in model.modules():
            if hasattr(module, "support_avx512bf16_for_cpu"):  # bnb.nn.Linear4bit's switch for the repacking
                module.support_avx512bf16_for_cpu = False
    return model.eval()


def dequantized_weight(linear) -> torch.Tensor:
    """The float weight (out, in) a bitsandbytes `Linear4bit` multiplies by: its NF4 codes × block scales."""
    import bitsandbytes.functional as bnbF

    return bnbF.dequantize_4bit(linear.weight.data, linear.weight.quant_state).float()


def add_lora(model, r: int = 8, alpha: float = 16, targets=LLAMA_TARGETS, dropout: float = 0.0):
    """Freeze `model` and wrap each `targets` linear with a rank-`r` LoRA adapter (peft); the peft model.

    `prepare_model_for_kbit_training` runs first (it works on CPU): it freezes every base parameter, casts any
    16-bit non-quantized parameter (norms, embedding) to float32 for stable training, and makes the input
    embeddings' output require grad — needed only with gradient checkpointing, which we leave off (a 135M model's
    activations are small; recomputing them would cost a third more time)."""
    from peft import LoraConfig, get_peft_model, prepare_model_for_kbit_training

    if r < 1:
        raise ValueError(f"LoRA rank r must be ≥ 1; got {r}")
    if getattr(model, "is_loaded_in_4bit", False) or getattr(model, "is_quantized", False):
        model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=False)
    else:
        for p in model.parameters():
            p.requires_grad_(False)
    config = LoraConfig(r=r, lora_alpha=alpha, target_modules=list(targets), lora_dropout=dropout,
                        bias="none", task_type="CAUSAL_LM")
    return get_peft_model(model, config)


def trainable_parameters(model) -> int:
    """Number of parameters that will receive gradients (the adapters' A and B)."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


# --------------------------------------------------------------------------------------------------
# 3. Training and evaluation on the answer tokens
# --------------------------------------------------------------------------------------------------

def _batch(data: InstructionData, idx) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Rows `idx`, cut to the longest real sequence among them (right padding: the tail is all padding)."""
    T = int(data.attention_mask[idx].sum(1).max())
    return data.input_ids[idx, :T], data.labels[idx, :T], data.attention_mask[idx, :T]


def answer_nll(model, input_ids, labels, attention_mask) -> tuple[torch.Tensor, int]:
    """Summed next-token NLL over the answer tokens, and how many there are."""
    logits = model(input_ids=input_ids, attention_mask=attention_mask).logits[:, :-1].float()  # (B, T-1, V)
    target = labels[:, 1:]  # (B, T-1) token t+1 is predicted at position t
    nll = F.cross_entropy(logits.transpose(1, 2), target, ignore_index=IGNORE, reduction="sum")
    return nll, int((target != IGNORE).sum())


@dataclass
class FinetuneResult:
    losses: list = field(default_factory=list)  # mean answer NLL of each step's batch (nats/token)
    seconds: float = 0.0  # wall clock
    cpu_seconds: float = 0.0  # this process's CPU time: with 1 thread, the wall time on an idle machine
    steps_per_s: float = 0.0
    tokens_per_s: float = 0.0  # all (prompt + answer) tokens pushed forward and backward per second


def finetune(model, data: InstructionData, steps: int = 12, lr: float = 2e-3, batch_size: int = 8, seed: int = 0,
             max_grad_norm: float | None = 0.3, warmup: int = 3, optimizer: str = "adamw",
             desc: str = "QLoRA") -> FinetuneResult:
    """Train the parameters that require grad (the adapters) for `steps` AdamW steps on shuffled batches of `data`.

    The learning rate rises linearly over `warmup` steps to `lr`, then falls linearly to 0 at the last step
    Defaults: 12 steps of 8 Multi30k pairs, ≈ 58 s on one CPU thread, take SmolLM2's held-out answer perplexity
    from 46 to 15.
    max_grad_norm: gradients clipped to this global norm (the QLoRA paper's 0.3), None: no clipping.
    optimizer: "adamw" (torch.optim.AdamW) or "paged_adamw" (bitsandbytes.optim.PagedAdamW; on CPU it runs
    without paging — see `paged_adamw_status`)."""
    repacked = [n for n, m in model.named_modules()
                if getattr(getattr(getattr(m, "weight", None), "quant_state", None), "packing_format_for_cpu", False)]
    if repacked:
        raise ValueError(f"{len(repacked)} layers (e.g. {repacked[0]}) were repacked for bitsandbytes' CPU inference "
                         f"kernel, which breaks training: load with load_4bit(cpu_inference_kernel=False)")
    params = [p for p in model.parameters() if p.requires_grad]
    if not any(p.requires_grad for n, p in model.named_parameters() if "lora_" in n):
        raise ValueError("the model has no trainable LoRA adapter: call add_lora(model) first")
    if steps < 1 or batch_size < 1:
        raise ValueError(f"steps and batch_size must be ≥ 1; got {steps}, {batch_size}")
    if optimizer == "adamw":
        opt = torch.optim.AdamW(params, lr=lr, weight_decay=0.0)
    elif optimizer == "paged_adamw":
        import bitsandbytes as bnb

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            opt = bnb.optim.PagedAdamW(params, lr=lr, weight_decay=0.0)
    else:
        raise ValueError(f"optimizer must be 'adamw' or 'paged_adamw'; got {optimizer!r}")
    g = torch.Generator().manual_seed(seed)
    order = torch.empty(0, dtype=torch.long)
    result, tokens = FinetuneResult(), 0
    model.train()
    start, cpu_start = time.perf_counter(), time.process_time()
    bar = progress_bar(range(steps), desc=desc)
    for step in bar:
        for group in opt.param_groups:
            group["lr"] = lr * min((step + 1) / max(warmup, 1), (steps - step) / max(steps - warmup, 1))
        if len(order) < batch_size:  # epochs of shuffled examples: each seen once before any is seen twice
            order = torch.cat([order, torch.randperm(len(data), generator=g)])
        idx, order = order[:batch_size], order[batch_size:]
        input_ids, labels, mask = _batch(data, idx)
        nll, count = answer_nll(model, input_ids, labels, mask)
        loss = nll / count
        opt.zero_grad(set_to_none=True)
        loss.backward()
        if max_grad_norm is not None:
            torch.nn.utils.clip_grad_norm_(params, max_grad_norm)
        opt.step()
        result.losses.append(loss.item())
        tokens += int(mask.sum())
        bar.set_postfix(loss=f"{loss.item():.3f}")
    model.eval()
    result.seconds, result.cpu_seconds = time.perf_counter() - start, time.process_time() - cpu_start
    result.steps_per_s = steps / result.seconds
    result.tokens_per_s = tokens / result.seconds
    return result


@torch.inference_mode()
def answer_perplexity(model, data: InstructionData, batch_size: int = 16) -> float:
    """exp(mean NLL) over the answer tokens of `data` only (the prompt is given, not scored)."""
    total, count = 0.0, 0
    for b in range(0, len(data), batch_size):
        nll, n = answer_nll(model, *_batch(data, torch.arange(b, min(b + batch_size, len(data)))))
        total, count = total + nll.item(), count + n
    return math.exp(total / count)


def generations(model, tok, pairs, max_new_tokens: int = 40) -> list[dict]:
    """For each (english, german) pair: the reference, the base model's answer (adapters disabled) and the
    fine-tuned answer — before/after from one peft model."""
    rows = []
    for en, de in pairs:
        row = {"english": en, "reference": de}
        if hasattr(model, "disable_adapter"):
            with model.disable_adapter():
                row["before"] = llm.chat(model, tok, prompt_of(en), max_new_tokens)
        row["after"] = llm.chat(model, tok, prompt_of(en), max_new_tokens)
        rows.append(row)
    return rows


# --------------------------------------------------------------------------------------------------
# 4. What it costs: load time / memory in a fresh process, and the paged optimizer on CPU
# --------------------------------------------------------------------------------------------------

_FOOTPRINT = """
import json, time, torch
from helpers.quant import evaluate, qlora
from helpers import llm
t = time.perf_counter()
model = llm.load()[0] if {kind!r} == "fp32" else qlora.load_4bit(double_quant={kind!r} != "nf4",
                                                                  cpu_inference_kernel={kind!r} == "nf4-dq-kernel")
load_s = time.perf_counter() - t
x = torch.randint(0, 1000, (1, {seqlen}))
with torch.inference_mode():
    model(x)
    t = time.perf_counter()
    for _ in range(3):
        model(x)
    forward_s = (time.perf_counter() - t) / 3
print(json.dumps(dict(kind={kind!r}, load_s=load_s, forward_s=forward_s, peak_rss_mb=evaluate.peak_rss_mb(),
                      model_mb=model.get_memory_footprint() / 1e6)))
"""


def footprint(kind: str = "nf4-dq", seqlen: int = 256) -> dict:
    """Load time, peak RSS, bytes held by the model and one forward of (1, seqlen) tokens, in a fresh Python
    process (ru_maxrss only ever grows, so each measurement needs its own process). kind: fp32, nf4, nf4-dq (double
    quantization), nf4-dq-kernel (and bitsandbytes' repacked CPU inference kernel, see `load_4bit`)."""
    kinds = ("fp32", "nf4", "nf4-dq", "nf4-dq-kernel")
    if kind not in kinds:
        raise ValueError(f"kind must be one of {kinds}; got {kind!r}")
    out = subprocess.run([sys.executable, "-c", _FOOTPRINT.format(kind=kind, seqlen=seqlen)], capture_output=True,
                         text=True, cwd=str(ROOT))
    if out.returncode != 0:
        raise RuntimeError(f"footprint({kind!r}) failed:\n{out.stderr[-2000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def paged_adamw_check(steps: int = 3) -> tuple[float, list[str]]:
    """`steps` of bitsandbytes' PagedAdamW and of torch.optim.AdamW from the same start on the same loss: the largest
    difference between their parameters and the warnings bitsandbytes gave. Raises whatever PagedAdamW raises."""
    import bitsandbytes as bnb

    torch.manual_seed(0)
    p = torch.nn.Parameter(torch.randn(64, 32))
    ref = torch.nn.Parameter(p.detach().clone())
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        opt = bnb.optim.PagedAdamW([p], lr=1e-2, weight_decay=0.0)
        ref_opt = torch.optim.AdamW([ref], lr=1e-2, weight_decay=0.0)
        for _ in range(steps):
            for q, o in ((p, opt), (ref, ref_opt)):
                o.zero_grad()
                (q ** 2).sum().backward()
                o.step()
    return (p - ref).abs().max().item(), sorted({str(w.message) for w in caught})


def paged_adamw_status() -> str:
    """Does bitsandbytes' PagedAdamW run on this machine? One sentence with the evidence, for a notebook cell."""
    import bitsandbytes as bnb

    try:
        diff, notes = paged_adamw_check()
    except Exception as e:  # noqa: BLE001 — the exact error is the answer
        return f"bitsandbytes {bnb.__version__} PagedAdamW fails here: {type(e).__name__}: {e}"
    return (f"bitsandbytes {bnb.__version__} PagedAdamW runs on CPU ({'; '.join(notes) or 'no warning'}); after 3 "
            f"steps its parameters differ from torch.optim.AdamW's by at most {diff:.1e}. Paging moves optimizer "
            f"state between GPU and CPU memory with CUDA unified memory: on a CPU there is nothing to page.")
