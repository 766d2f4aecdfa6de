"""LeNet-5 (LeCun et al., 1998) in its common modern form: ReLU and max pooling.

Two 5x5 convolutions and three fully connected layers, built for 32x32 inputs. MNIST's 28x28 digits
are zero-padded to 32x32 inside `forward`, exactly as the paper padded them, so one constructor
serves CIFAR-10 (`LeNet5()`) and MNIST (`LeNet5(in_channels=1)`). The quantization modules reuse it.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def scaled(channels: int, width: float) -> int:
    """`channels * width`, rounded, at least 1: the width multiplier every course CNN takes."""
    if not width > 0:
        raise ValueError(f"width must be > 0, got {width!r}")
    return max(1, round(channels * width))


class LeNet5(nn.Module):
    """conv5(6) → pool → conv5(16) → pool → fc120 → fc84 → fc(num_classes); 62,006 params for RGB."""

    def __init__(self, in_channels: int = 3, num_classes: int = 10, width: float = 1.0):
        super().__init__()
        if in_channels < 1 or num_classes < 2:
            raise ValueError(f"need in_channels >= 1 and num_classes >= 2, got {in_channels}, {num_classes}")
        c1, c2, f1, f2 = (scaled(c, width) for c in (6, 16, 120, 84))
        self.features = nn.Sequential(
            nn.Conv2d(in_channels, c1, 5), nn.ReLU(), nn.MaxPool2d(2),  # (B, c1, 14, 14)
            nn.Conv2d(c1, c2, 5), nn.ReLU(), nn.MaxPool2d(2),           # (B, c2, 5, 5)
        )
        self.classifier = nn.Sequential(
            nn.Flatten(),
            nn.Linear(c2 * 5 * 5, f1), nn.ReLU(),
            nn.Linear(f1, f2), nn.ReLU(),
            nn.Linear(f2, num_classes),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, C, 32, 32) or (B, C, 28, 28)
        if x.ndim != 4 or x.shape[-2:] not in ((32, 32), (28, 28)):
            raise ValueError(f"LeNet5 expects (B, C, 32, 32) or (B, C, 28, 28), got {tuple(x.shape)}")
        if x.shape[-1] == 28:
            x = F.pad(x, (2, 2, 2, 2))  # MNIST: pad to 32x32 as in the paper
        return self.classifier(self.features(x))  # (B, num_classes)
