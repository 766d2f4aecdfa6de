"""LoRA from scratch against peft (the library practitioners use) on the same weights; merging; the parameter count."""
import copy

import pytest
import torch
from torch import nn

from helpers.compress.lora import LoRALinear, apply_lora, lora_parameter_count


class Tiny(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(24, 40)
        self.out = nn.Linear(40, 5)

    def forward(self, x):
        return self.out(torch.relu(self.fc(x)))


def test_matches_peft_on_the_same_weights():
    from peft import LoraConfig, get_peft_model

    torch.manual_seed(0)
    model = Tiny()
    ours = apply_lora(copy.deepcopy(model), ["fc"], r=4, alpha=8)
    with torch.no_grad():
        ours.fc.B.normal_()  # B = 0 at init would make any adapter "match"; give it a real update
    theirs = get_peft_model(copy.deepcopy(model), LoraConfig(r=4, lora_alpha=8, target_modules=["fc"],
                                                             lora_dropout=0.0, bias="none"))
    fc = theirs.base_model.model.fc
    with torch.no_grad():
        fc.lora_A["default"].weight.copy_(ours.fc.A)
        fc.lora_B["default"].weight.copy_(ours.fc.B)
    assert fc.scaling["default"] == ours.fc.scaling == 2.0
    x = torch.randn(16, 24)
    assert (ours(x) - theirs(x)).abs().max().item() <= 1e-6
    # the same trainable parameters: A and B only
    n_ours = sum(p.numel() for p in ours.parameters() if p.requires_grad)
    n_theirs = sum(p.numel() for p in theirs.parameters() if p.requires_grad)
    assert n_ours == n_theirs == lora_parameter_count(24, 40, 4)


def test_starts_at_the_base_model_and_only_adapters_train():
    torch.manual_seed(0)
    base = nn.Linear(16, 8)
    lora = LoRALinear(base, r=2, alpha=4)
    x = torch.randn(5, 16)
    assert torch.equal(lora(x), base(x))  # B = 0: exactly the pretrained layer
    lora(x).pow(2).sum().backward()
    assert base.weight.grad is None and base.bias.grad is None
    assert lora.A.grad is not None and lora.B.grad is not None


def test_merge_equals_unmerged():
    """Merging is exact algebra: W0 x + s·B(A x) = (W0 + s·BA) x. In float64 only rounding at 1e-16 remains; in
    float32 the two orders of summation differ by a few ulps of outputs of size O(1) (≤ 1e-6)."""
    torch.manual_seed(0)
    lora = LoRALinear(nn.Linear(64, 32), r=8, alpha=16)
    with torch.no_grad():
        lora.B.normal_(std=0.02)  # an update small next to W0, as after fine-tuning
    merged = lora.merge()
    assert type(merged) is nn.Linear and merged.weight.requires_grad
    x = torch.randn(10, 64)
    assert (merged(x) - lora(x)).abs().max().item() <= 1e-6
    lora64 = copy.deepcopy(lora).double()
    assert (lora64.merge()(x.double()) - lora64(x.double())).abs().max().item() <= 1e-12


def test_parameter_count_exact():
    n = lora_parameter_count(2048, 8192, 16)
    assert n == 163_840
    assert 2048 * 8192 == 16_777_216
    assert 2048 * 8192 / n == 102.4
    lora = LoRALinear(nn.Linear(2048, 8192, bias=False), r=16, alpha=32)
    assert sum(p.numel() for p in lora.parameters() if p.requires_grad) == n


def test_bad_input():
    with pytest.raises(TypeError, match="nn.Linear"):
        LoRALinear(nn.Conv2d(1, 1, 3), r=2, alpha=2)
    with pytest.raises(ValueError, match="rank"):
        LoRALinear(nn.Linear(2, 2), r=0, alpha=2)
    with pytest.raises(ValueError, match="d_in"):
        lora_parameter_count(0, 4, 2)
    with pytest.raises(ValueError, match="no nn.Linear"):
        apply_lora(Tiny(), ["q_proj"], r=2, alpha=2)
