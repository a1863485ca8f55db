"""Models that `fattr attribute --model tests/run/models.py:NAME` loads in the tests."""

from __future__ import annotations

import time

import torch
from torch import nn


class SmallCNN(nn.Module):
    """Two conv blocks and a linear head for (B, 3, 16, 16) images; `delay` seconds of sleep
    per forward make a run slow enough to be interrupted mid-way."""

    def __init__(self, classes: int = 5, delay: float = 0.0):
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
                                      nn.Conv2d(8, 8, 3, padding=1), nn.ReLU())
        self.head = nn.Linear(8 * 8 * 8, classes)
        self.delay = delay

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.delay:
            time.sleep(self.delay)
        return self.head(self.features(x).flatten(1))


def small_cnn(classes: int = 5, delay: float = 0.0, seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return SmallCNN(classes, delay)
