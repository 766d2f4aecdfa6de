"""ResNet-18 for CIFAR (He et al., 2016): basic blocks with identity skip connections.

CIFAR variant: a 3x3 stem conv (no 7x7 stride-2 conv, no max pool), four stages of two basic blocks
(64-128-256-512 channels, strides 1-2-2-2), global average pooling, one linear layer: 11,173,962
params at width 1. `BasicBlock(skip=False)` is the same block without its shortcut: the "plain"
network of the paper's degradation experiment, used to compare gradient flow.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .lenet import scaled


class BasicBlock(nn.Module):
    """out = relu(bn2(conv2(relu(bn1(conv1(x))))) + shortcut(x)); shortcut = 1x1 conv + BN when shapes change."""

    def __init__(self, in_ch: int, out_ch: int, stride: int = 1, skip: bool = True):
        super().__init__()
        self.conv1 = nn.Conv2d(in_ch, out_ch, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(out_ch)
        self.conv2 = nn.Conv2d(out_ch, out_ch, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_ch)
        self.skip = skip
        self.shortcut = nn.Identity()
        if skip and (stride != 1 or in_ch != out_ch):  # projection shortcut (option B)
            self.shortcut = nn.Sequential(nn.Conv2d(in_ch, out_ch, 1, stride=stride, bias=False),
                                          nn.BatchNorm2d(out_ch))

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, in_ch, H, W) → (B, out_ch, H/s, W/s)
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        if self.skip:
            out = out + self.shortcut(x)  # the sum hands dL/d(out) to both paths unchanged ...
        return F.relu(out)  # ... but this ReLU gates it first: dL/dx = (I + dF/dx)^T (relu'(x + F(x)) * dL/dy)


class ResNet(nn.Module):
    """stem conv3x3 → 4 stages of BasicBlocks → global average pool → linear."""

    def __init__(self, blocks=(2, 2, 2, 2), in_channels: int = 3, num_classes: int = 10,
                 width: float = 1.0, skip: bool = True):
        super().__init__()
        if len(blocks) != 4 or min(blocks) < 1:
            raise ValueError(f"blocks must be 4 positive counts, got {blocks!r}")
        chans = [scaled(c, width) for c in (64, 128, 256, 512)]
        self.stem = nn.Sequential(nn.Conv2d(in_channels, chans[0], 3, padding=1, bias=False),
                                  nn.BatchNorm2d(chans[0]), nn.ReLU(inplace=True))
        stages, c = [], chans[0]
        for i, (n, out) in enumerate(zip(blocks, chans)):
            for j in range(n):
                stride = 2 if (i > 0 and j == 0) else 1
                stages.append(BasicBlock(c, out, stride, skip=skip))
                c = out
        self.layers = nn.Sequential(*stages)
        self.head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(c, num_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, C, H, W)
        if x.ndim != 4:
            raise ValueError(f"ResNet expects (B, C, H, W), got {tuple(x.shape)}")
        return self.head(self.layers(self.stem(x)))  # (B, num_classes)


def resnet18(in_channels: int = 3, num_classes: int = 10, width: float = 1.0) -> ResNet:
    """ResNet-18, CIFAR variant (3x3 stem, no max pool)."""
    return ResNet((2, 2, 2, 2), in_channels, num_classes, width)
