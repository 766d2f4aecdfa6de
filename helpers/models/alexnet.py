"""An AlexNet-style network for 32x32 images (Krizhevsky et al., 2012, scaled to CIFAR).

What made AlexNet: ReLU instead of tanh, dropout in the big fully connected head, data augmentation
(see `helpers.train.random_crop_flip`), and a deep stack of convolutions. Here: five 3x3 convolutions
(64-192-384-256-256) with three max pools, then a dropout MLP head (4096 → 1024 → 1024 → classes).
No batch norm, as in the original (local response normalisation is left out, as most re-implementations do).
`activation="tanh"` and `dropout=0` give the ablations of 0.3's Capstone Step 6 (tanh with its own init).
"""
from __future__ import annotations

import torch
from torch import nn

from .lenet import scaled


class AlexNet(nn.Module):
    """5 conv (ReLU) + 3 max-pool + 3 FC with dropout; 7.5 M params at width 1.

    `width` scales the conv channels only; the FC head keeps `hidden` units so dropout has room.
    """

    def __init__(self, in_channels: int = 3, num_classes: int = 10, width: float = 1.0,
                 dropout: float = 0.5, hidden: int = 1024, activation: str = "relu"):
        super().__init__()
        if activation not in ("relu", "tanh"):
            raise ValueError(f"activation must be 'relu' or 'tanh', got {activation!r}")
        c1, c2, c3, c4, c5 = (scaled(c, width) for c in (64, 192, 384, 256, 256))
        act = (lambda: nn.ReLU(inplace=True)) if activation == "relu" else nn.Tanh  # noqa: E731
        self.features = nn.Sequential(
            nn.Conv2d(in_channels, c1, 3, padding=1), act(), nn.MaxPool2d(2),  # (B, c1, 16, 16)
            nn.Conv2d(c1, c2, 3, padding=1), act(), nn.MaxPool2d(2),           # (B, c2, 8, 8)
            nn.Conv2d(c2, c3, 3, padding=1), act(),
            nn.Conv2d(c3, c4, 3, padding=1), act(),
            nn.Conv2d(c4, c5, 3, padding=1), act(), nn.MaxPool2d(2),           # (B, c5, 4, 4)
        )
        self.classifier = nn.Sequential(
            nn.Flatten(),
            nn.Dropout(dropout), nn.Linear(c5 * 4 * 4, hidden), act(),
            nn.Dropout(dropout), nn.Linear(hidden, hidden), act(),
            nn.Linear(hidden, num_classes),
        )
        for m in self.modules():  # He init keeps the ReLU signal alive through 8 layers without BN;
            if isinstance(m, (nn.Conv2d, nn.Linear)):  # tanh gets Glorot init with tanh's gain (5/3)
                if activation == "relu":
                    nn.init.kaiming_normal_(m.weight, nonlinearity="relu")
                else:
                    nn.init.xavier_normal_(m.weight, gain=nn.init.calculate_gain("tanh"))
                nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, C, 32, 32)
        if x.ndim != 4 or x.shape[-2:] != (32, 32):
            raise ValueError(f"AlexNet expects (B, C, 32, 32), got {tuple(x.shape)}")
        return self.classifier(self.features(x))  # (B, num_classes)
