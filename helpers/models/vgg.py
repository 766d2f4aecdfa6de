"""VGG for 32x32 images (Simonyan & Zisserman, 2014): only 3x3 convolutions, depth instead of width.

Two stacked 3x3 convs see a 5x5 window with 2·9·C² weights instead of 25·C², and add a ReLU between.
The CIFAR variant (as in most CIFAR reproductions) adds batch norm after every conv, drops the three
4096-wide FC layers for a single linear classifier on the 512x1x1 map, and keeps the five max pools.
"""
from __future__ import annotations

import torch
from torch import nn

from .lenet import scaled

# numbers are conv output channels, "M" a 2x2 max pool (VGG paper, Table 1, configurations A, B, D).
CONFIGS = {
    "vgg11": [64, "M", 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"],
    "vgg13": [64, 64, "M", 128, 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"],
    "vgg16": [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M"],
}


class VGG(nn.Module):
    """VGG-11/13/16 with batch norm (convs without bias, BN has one); VGG-11: 9.23 M params at width 1."""

    def __init__(self, config: str = "vgg11", in_channels: int = 3, num_classes: int = 10,
                 width: float = 1.0):
        super().__init__()
        if config not in CONFIGS:
            raise ValueError(f"unknown VGG config {config!r}; known: {', '.join(CONFIGS)}")
        layers: list[nn.Module] = []
        c = in_channels
        for v in CONFIGS[config]:
            if v == "M":
                layers.append(nn.MaxPool2d(2))  # halves H and W: 32 → 16 → 8 → 4 → 2 → 1
            else:
                out = scaled(v, width)
                layers += [nn.Conv2d(c, out, 3, padding=1, bias=False), nn.BatchNorm2d(out),
                           nn.ReLU(inplace=True)]
                c = out
        self.features = nn.Sequential(*layers)
        self.classifier = nn.Sequential(nn.Flatten(), nn.Linear(c, num_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, C, 32, 32)
        if x.ndim != 4 or x.shape[-2:] != (32, 32):
            raise ValueError(f"VGG expects (B, C, 32, 32), got {tuple(x.shape)}")
        return self.classifier(self.features(x))  # (B, c, 1, 1) → (B, num_classes)
