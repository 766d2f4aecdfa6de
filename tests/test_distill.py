"""Knowledge distillation: kd_loss against the closed form written out with explicit sums, the T² factor's
gradient scaling, bad inputs, and the distill loop learning from a teacher's logits alone."""
import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from helpers.compress.distill import distill, kd_loss, soften, teacher_logits


def closed_form(s, t, y, T, alpha, t_squared=True):
    """Hinton et al. 2015's loss with explicit exp/log/sum in float64 (no torch.nn.functional)."""
    s, t = s.double(), t.double()
    def softmax(z):
        e = torch.exp(z - z.max(1, keepdim=True).values)
        return e / e.sum(1, keepdim=True)
    pt, ps = softmax(t / T), softmax(s / T)
    kl = (pt * (torch.log(pt) - torch.log(ps))).sum(1).mean()
    ce = -torch.log(softmax(s)[torch.arange(len(y)), y]).mean()
    return alpha * (T * T if t_squared else 1.0) * kl + (1 - alpha) * ce


@pytest.mark.parametrize("T,alpha", [(1.0, 0.5), (2.0, 0.5), (4.0, 0.9), (8.0, 1.0), (3.0, 0.0)])
def test_kd_loss_matches_closed_form(T, alpha):
    g = torch.Generator().manual_seed(0)
    s, t = torch.randn(32, 10, generator=g) * 3, torch.randn(32, 10, generator=g) * 3
    y = torch.randint(0, 10, (32,), generator=g)
    for t_sq in (True, False):
        got = kd_loss(s, t, y, T=T, alpha=alpha, t_squared=t_sq)
        assert abs(got.item() - closed_form(s, t, y, T, alpha, t_sq).item()) <= 1e-5


def test_kd_loss_is_zero_soft_term_when_student_equals_teacher():
    z = torch.randn(8, 10)
    assert kd_loss(z, z.clone(), None, T=4.0, alpha=1.0).abs().item() <= 1e-6


def test_soft_gradient_scales_as_one_over_T_squared():
    """Without T² the soft term's gradient shrinks like 1/T² (paper §2, high-temperature limit); with T², not."""
    g = torch.Generator().manual_seed(1)
    s0, t = torch.randn(64, 10, generator=g), torch.randn(64, 10, generator=g)  # logits O(1): in the limit at T ≥ 8
    norms = {}
    for T in (8.0, 16.0, 32.0):
        for t_sq in (True, False):
            s = s0.clone().requires_grad_(True)
            kd_loss(s, t, None, T=T, alpha=1.0, t_squared=t_sq).backward()
            norms[T, t_sq] = s.grad.norm().item()
    for T in (16.0, 32.0):
        # closed form of the limit: grad = (z_s - z_t - mean) / (K T²) per logit → ratio (8/T)² exactly as T → ∞
        assert norms[T, False] / norms[8.0, False] == pytest.approx((8.0 / T) ** 2, rel=0.05)
        assert norms[T, True] / norms[8.0, True] == pytest.approx(1.0, rel=0.05)


def test_kd_loss_rejects_bad_input():
    s = torch.randn(4, 10)
    with pytest.raises(ValueError, match="logits"):
        kd_loss(s, torch.randn(4, 9), torch.zeros(4, dtype=torch.long))
    with pytest.raises(ValueError, match="alpha"):
        kd_loss(s, s, torch.zeros(4, dtype=torch.long), alpha=1.5)
    with pytest.raises(ValueError, match="temperature"):
        kd_loss(s, s, torch.zeros(4, dtype=torch.long), T=0)
    with pytest.raises(ValueError, match="labels"):
        kd_loss(s, s, None, alpha=0.5)
    with pytest.raises(ValueError, match="temperature"):
        soften(s, -1.0)


def test_soften_is_softmax_of_scaled_logits():
    z = torch.tensor([[2.0, 1.0, 0.0]])
    e = [math.exp(v / 2) for v in (2.0, 1.0, 0.0)]
    assert torch.allclose(soften(z, 2.0), torch.tensor([[v / sum(e) for v in e]]), atol=1e-7)


def test_distill_student_learns_the_teachers_function_from_soft_targets_alone():
    """A random linear teacher on Gaussian inputs; the labels given are all WRONG (constant 0), alpha = 1 ignores them:
    the student must reach the teacher's argmax from its logits alone."""
    torch.manual_seed(0)
    teacher = nn.Linear(8, 4)
    x = torch.randn(512, 8)
    wrong = torch.zeros(512, dtype=torch.long)
    student = nn.Sequential(nn.Linear(8, 32), nn.ReLU(), nn.Linear(32, 4))
    distill(student, teacher, (x, wrong), steps=300, T=2.0, alpha=1.0, lr=1e-2, progress=False)
    agree = (student(x).argmax(1) == teacher(x).argmax(1)).float().mean().item()
    assert agree >= 0.9
    cached = teacher_logits(teacher, x)
    assert torch.allclose(cached, teacher(x), atol=1e-6)


def test_distill_rejects_bad_input():
    s = nn.Linear(2, 2)
    with pytest.raises(ValueError, match="teacher"):
        distill(s, None, (torch.randn(4, 2), torch.zeros(4, dtype=torch.long)), steps=1, alpha=0.5, progress=False)
    with pytest.raises(ValueError, match="equally long"):
        distill(s, s, (torch.randn(4, 2), torch.zeros(3, dtype=torch.long)), steps=1, progress=False)
