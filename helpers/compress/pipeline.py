"""The compression pipeline of the Module 1.3 capstone: fine-tune, prune, distil and measure a BERT sentence classifier.

One loop serves every stage, so the variants differ only in what the stage changes:

    fine-tune (teacher)      cross-entropy on the labels
    masked fine-tune         the same, with the pruning masks re-applied after every optimizer step (Han et al. 2015,
                             "Learning both Weights and Connections"): the pruned weights stay exactly zero
    distillation             kd_loss on the teacher's cached logits (Hinton et al. 2015), `alpha` weighs soft vs hard

The student is built DistilBERT-style (Sanh et al. 2019, §3: "initialize the student from the teacher by taking one
layer out of two"): the teacher's embeddings, a subset of its transformer layers, its pooler and classifier.

Measurements: dev accuracy (every sentence), parameters and non-zeros, size in bytes (dense fp32), and CPU latency
(min over repeats: the least-disturbed run; models measured in turns). Sentences are tokenized once; each batch is
padded only to its own longest sentence, and batches are built from length-sorted chunks so that little compute is
spent on padding.
"""
from __future__ import annotations

import copy
import time
from dataclasses import dataclass
from typing import Iterator, Sequence

import torch
from torch import nn

from ..progress import progress_bar
from .distill import kd_loss
from .prune import apply_masks


@dataclass
class Encoded:
    """Tokenized sentences (token ids without padding, [CLS] … [SEP]) and their labels."""

    ids: list[list[int]]
    labels: torch.Tensor  # (N,) int64
    pad_id: int = 0

    def __len__(self) -> int:
        return len(self.ids)

    def batch(self, idx: Sequence[int], device: torch.device | str = "cpu") -> dict[str, torch.Tensor]:
        """Padded model inputs for the sentences `idx`: input_ids and attention_mask (B, T_max of the batch)."""
        T = max(len(self.ids[i]) for i in idx)
        input_ids = torch.full((len(idx), T), self.pad_id, dtype=torch.long)    # (B, T)
        mask = torch.zeros(len(idx), T, dtype=torch.long)                        # (B, T) 1 = real token
        for row, i in enumerate(idx):
            input_ids[row, :len(self.ids[i])] = torch.tensor(self.ids[i])
            mask[row, :len(self.ids[i])] = 1
        return {"input_ids": input_ids.to(device), "attention_mask": mask.to(device)}


def encode(tok, pairs: Sequence[tuple[str, int]], max_length: int = 64) -> Encoded:
    """(sentence, label) pairs -> Encoded, each sentence cut to `max_length` tokens."""
    if not pairs:
        raise ValueError("encode: no sentences given")
    if not (isinstance(pairs[0], (tuple, list)) and len(pairs[0]) == 2):
        raise TypeError(f"encode takes (sentence, label) pairs, e.g. load_sst2()['dev']; got {pairs[0]!r}")
    ids = tok([s for s, _ in pairs], truncation=True, max_length=max_length)["input_ids"]
    return Encoded(ids, torch.tensor([y for _, y in pairs], dtype=torch.long), tok.pad_token_id)


def batches(data: Encoded, batch_size: int, seed: int | None = None, chunk: int = 16) -> Iterator[list[int]]:
    """Index lists of `batch_size` sentences of similar length. seed=None: the data's order, sorted (evaluation);
    else a seeded shuffle, sorted within chunks of `chunk` batches, the batches then shuffled again."""
    n = len(data)
    if seed is None:
        order = sorted(range(n), key=lambda i: len(data.ids[i]))
        yield from (order[i:i + batch_size] for i in range(0, n, batch_size))
        return
    g = torch.Generator().manual_seed(seed)
    perm = torch.randperm(n, generator=g).tolist()
    span = batch_size * chunk
    out = []
    for c in range(0, n, span):
        part = sorted(perm[c:c + span], key=lambda i: len(data.ids[i]))
        out += [part[i:i + batch_size] for i in range(0, len(part), batch_size)]
    yield from (out[i] for i in torch.randperm(len(out), generator=g).tolist())


def train(model: nn.Module, data: Encoded, *, steps: int, lr: float = 5e-5, batch_size: int = 32, seed: int = 0,
          masks: dict[str, torch.Tensor] | None = None, teacher_logits: torch.Tensor | None = None,
          T: float = 2.0, alpha: float = 0.5, freeze_embeddings: bool = False,
          desc: str = "fine-tuning") -> list[float]:
    """`steps` AdamW steps (linear learning-rate decay to 0) on `data`; returns the losses.

    masks: re-applied after every step (pruned weights stay zero). teacher_logits (N, K) for the N sentences of
    `data`: the loss is kd_loss(student, teacher, labels, T, alpha), else cross-entropy. freeze_embeddings: the
    embedding tables (half of MiniLM's parameters) get no gradient and no optimizer state — a cheaper step."""
    if steps < 1:
        raise ValueError(f"steps must be >= 1; got {steps}")
    if teacher_logits is not None and teacher_logits.shape[0] != len(data):
        raise ValueError(f"teacher_logits has {teacher_logits.shape[0]} rows for {len(data)} sentences: "
                         f"cache them on the same Encoded data")
    torch.manual_seed(seed)  # dropout
    for name, p in model.named_parameters():
        p.requires_grad_(not (freeze_embeddings and ".embeddings." in f".{name}"))
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=0.01)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda k: 1 - k / steps)
    model.train()
    where = next(model.parameters()).device  # the data follows the model (CPU, or a GPU in the full profile)
    losses, epoch = [], 0
    bar = progress_bar(total=steps, desc=desc)
    while len(losses) < steps:
        for idx in batches(data, batch_size, seed=seed + epoch):
            logits = model(**data.batch(idx, where)).logits                          # (B, K)
            y = data.labels[idx].to(where)
            loss = (kd_loss(logits, teacher_logits[idx].to(where), y, T=T, alpha=alpha) if teacher_logits is not None
                    else nn.functional.cross_entropy(logits, y))
            loss.backward()
            opt.step()
            opt.zero_grad(set_to_none=True)
            sched.step()
            if masks is not None:
                with torch.no_grad():
                    apply_masks(model, masks)
            losses.append(loss.item())
            bar.update()
            if len(losses) == steps:
                break
        epoch += 1
    bar.close()
    for p in model.parameters():
        p.requires_grad_(True)
    model.eval()
    return losses


@torch.inference_mode()
def predict_logits(model: nn.Module, data: Encoded, batch_size: int = 128) -> torch.Tensor:
    """The model's logits (N, K) for every sentence, in the data's order (eval mode: no dropout)."""
    model.eval()
    where = next(model.parameters()).device
    out = [None] * len(data)
    for idx in batches(data, batch_size):
        logits = model(**data.batch(idx, where)).logits.float().cpu()              # (B, K)
        for row, i in enumerate(idx):
            out[i] = logits[row]
    return torch.stack(out)


def accuracy(model: nn.Module, data: Encoded) -> float:
    """Fraction of sentences whose argmax logit is the label."""
    return (predict_logits(model, data).argmax(-1) == data.labels).float().mean().item()


def student_from_teacher(teacher: nn.Module, layers: Sequence[int]) -> nn.Module:
    """A copy of a BERT classifier that keeps only the transformer layers `layers` (in that order): embeddings,
    pooler and classification head copied from the teacher (DistilBERT-style initialisation). The teacher is
    unchanged."""
    n = teacher.config.num_hidden_layers
    if not layers or any(not (isinstance(i, int) and 0 <= i < n) for i in layers):
        raise ValueError(f"layers must be indices into the teacher's {n} layers; got {list(layers)!r}")
    student = copy.deepcopy(teacher)
    student.bert.encoder.layer = nn.ModuleList(copy.deepcopy(teacher.bert.encoder.layer[i]) for i in layers)
    student.config.num_hidden_layers = len(layers)
    for new_i, layer in enumerate(student.bert.encoder.layer):  # the attention's layer_idx (caches): the new order
        if hasattr(layer.attention.self, "layer_idx"):
            layer.attention.self.layer_idx = new_i
    return student


def n_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def n_nonzero(model: nn.Module) -> int:
    return sum(int(p.count_nonzero()) for p in model.parameters())


def dense_bytes(model: nn.Module) -> int:
    """Bytes of all parameters stored densely in their dtype (fp32: 4 per parameter)."""
    return sum(p.numel() * p.element_size() for p in model.parameters())


@torch.inference_mode()
def latencies(models: dict[str, nn.Module], inputs: dict[str, torch.Tensor], repeats: int = 3, threads: int = 2,
              warmup: int = 1) -> dict[str, float]:
    """Seconds for one forward pass of each model on `inputs`, with `threads` CPU threads: the minimum over `repeats`
    rounds. The models take turns within each round, so a burst of load from other processes slows them all alike.
    Models on a GPU are measured on the CPU and moved back."""
    homes = {name: next(m.parameters()).device for name, m in models.items()}
    inputs = {k: v.cpu() for k, v in inputs.items()}
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    best = {name: float("inf") for name in models}
    try:
        for m in models.values():
            m.cpu().eval()
            for _ in range(warmup):
                m(**inputs)
        for _ in range(repeats):
            for name, m in models.items():
                t0 = time.perf_counter()
                m(**inputs)
                best[name] = min(best[name], time.perf_counter() - t0)
    finally:
        torch.set_num_threads(before)
        for name, m in models.items():
            m.to(homes[name])
    return best


def encoder_linears(name: str) -> bool:
    """True for the weights the capstone prunes: the nn.Linear layers inside the transformer layers (Q, K, V,
    attention output, the two MLP matrices); not the embeddings, pooler or classification head."""
    return name.startswith("bert.encoder.layer.")


def skip_all_but_encoder(name: str) -> bool:
    """`skip` argument of prune.prune_linear_weights that keeps only `encoder_linears`."""
    return not encoder_linears(name)
