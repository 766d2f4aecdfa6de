"""Knowledge distillation (Hinton, Vinyals & Dean 2015, "Distilling the Knowledge in a Neural Network").

A small *student* learns from a trained *teacher*'s output distribution, softened with a temperature T:

    p_i(T) = exp(z_i / T) / sum_j exp(z_j / T)          (T = 1: the ordinary softmax; T > 1: flatter)

The soft targets carry what the hard label does not: how much the teacher thinks a "7" looks like a "1" or a
"9" ("dark knowledge"). The loss mixes the two signals:

    L = alpha * T² * KL(p_teacher(T) || p_student(T))  +  (1 - alpha) * CE(student logits, label)

Why T²: the gradient of the soft term w.r.t. a student logit is (p_student(T) - p_teacher(T)) / T, and for
large T both p's are ≈ 1/K + z/(K T), so the difference is itself O(1/T): the soft gradient scales as 1/T².
Multiplying by T² keeps the soft and hard terms' relative weight the same when T changes (paper, §2).

Only the logits are compared, so teacher and student may have any architectures that share the output space.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..progress import progress_bar


def soften(logits: torch.Tensor, T: float) -> torch.Tensor:
    """softmax(logits / T) over the last dimension: the teacher's soft targets at temperature T."""
    if not T > 0:
        raise ValueError(f"temperature T must be > 0; got {T!r}")
    return F.softmax(logits / T, dim=-1)


def kd_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor, labels: torch.Tensor | None,
            T: float = 2.0, alpha: float = 0.5, t_squared: bool = True) -> torch.Tensor:
    """alpha * T² * KL(softmax(teacher/T) || softmax(student/T)) + (1 - alpha) * CE(student, labels).

    KL is averaged over the batch ("batchmean"). alpha = 1: soft targets only (labels may be None);
    alpha = 0: plain cross-entropy. t_squared=False drops the T² factor (to see why it is there)."""
    if student_logits.shape != teacher_logits.shape or student_logits.ndim != 2:
        raise ValueError(f"student and teacher logits must both be (B, classes); got {tuple(student_logits.shape)} "
                         f"and {tuple(teacher_logits.shape)}")
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha (the weight of the soft term) must be in [0, 1]; got {alpha!r}")
    if not T > 0:
        raise ValueError(f"temperature T must be > 0; got {T!r}")
    log_p_s = F.log_softmax(student_logits / T, dim=-1)                  # (B, K)
    log_p_t = F.log_softmax(teacher_logits.detach() / T, dim=-1)         # (B, K) no gradient into the teacher
    soft = F.kl_div(log_p_s, log_p_t, reduction="batchmean", log_target=True)  # KL(p_t || p_s)
    soft = soft * (T * T if t_squared else 1.0)
    if alpha == 1.0:
        return alpha * soft
    if labels is None:
        raise ValueError("labels are needed when alpha < 1 (the hard-label term); pass alpha=1.0 for soft-only")
    return alpha * soft + (1 - alpha) * F.cross_entropy(student_logits, labels)


@torch.no_grad()
def teacher_logits(teacher: nn.Module, x: torch.Tensor, batch_size: int = 1000) -> torch.Tensor:
    """The frozen teacher's logits for every input, computed once (eval mode): (N, K)."""
    was_training = teacher.training
    teacher.eval()
    out = torch.cat([teacher(x[i:i + batch_size]) for i in range(0, len(x), batch_size)])
    teacher.train(was_training)
    return out


def distill(student: nn.Module, teacher: nn.Module | None, data: tuple[torch.Tensor, torch.Tensor], *,
            steps: int, T: float = 4.0, alpha: float = 0.9, t_squared: bool = True, lr: float = 1e-3,
            batch_size: int = 128, seed: int = 0, cached_logits: torch.Tensor | None = None,
            progress: bool = True, desc: str = "distill") -> list[float]:
    """Train `student` for `steps` Adam steps on `data = (x, y)` with `kd_loss`; returns the per-step losses.

    The teacher is frozen and the inputs are not augmented, so its logits are computed once (`teacher_logits`)
    and looked up per batch; pass `cached_logits` to reuse them across runs (then `teacher` may be None).
    alpha = 0 trains on hard labels only (no teacher needed). The student is left in eval mode."""
    x, y = data
    if len(x) != len(y) or len(x) == 0:
        raise ValueError(f"x and y must be non-empty and equally long; got {len(x)} and {len(y)}")
    if steps < 1:
        raise ValueError(f"steps must be ≥ 1; got {steps}")
    if cached_logits is None and alpha > 0:
        if teacher is None:
            raise ValueError("pass a teacher or its cached_logits when alpha > 0")
        cached_logits = teacher_logits(teacher, x)                          # (N, K)
    g = torch.Generator().manual_seed(seed)
    opt = torch.optim.Adam(student.parameters(), lr=lr)
    order, losses = torch.empty(0, dtype=torch.long), []
    student.train()
    for _ in progress_bar(range(steps), desc=desc, disable=not progress, leave=False):
        if len(order) < batch_size:  # reshuffle each epoch: every example once before any twice
            order = torch.cat([order, torch.randperm(len(x), generator=g)])
        idx, order = order[:batch_size], order[batch_size:]
        logits = student(x[idx])                                            # (B, K)
        if alpha > 0:
            loss = kd_loss(logits, cached_logits[idx], y[idx], T=T, alpha=alpha, t_squared=t_squared)
        else:
            loss = F.cross_entropy(logits, y[idx])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        losses.append(loss.item())
    student.eval()
    return losses
