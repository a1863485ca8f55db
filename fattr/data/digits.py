"""A real trained model in seconds: a small CNN on scikit-learn's bundled handwritten digits.

Used by the demo, the tests and the retraining benchmarks; no download is needed.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn


def load_digits(seed: int = 0, test_fraction: float = 0.25, size: int = 8,
                ) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """(x_train, y_train, x_test, y_test); x of shape (N, 1, size, size) scaled to [0, 1].

    The digits are 8x8; a larger `size` upsamples them (bilinear, align_corners=False), so that
    a CNN keeps a few pixels of spatial resolution where a CAM reads its layer.
    """
    from sklearn.datasets import load_digits as sklearn_digits

    data = sklearn_digits()
    x = torch.tensor(data.images, dtype=torch.float32).unsqueeze(1) / 16.0
    if size != x.shape[-1]:
        x = nn.functional.interpolate(x, size=(size, size), mode="bilinear",
                                      align_corners=False).clamp(0, 1)
    y = torch.tensor(data.target)
    order = torch.randperm(len(x), generator=torch.Generator().manual_seed(seed))
    cut = int(len(x) * (1 - test_fraction))
    train, test = order[:cut], order[cut:]
    return x[train], y[train], x[test], y[test]


def digits_cnn() -> nn.Module:
    """Conv-ReLU-pool twice and a linear head: 8x8 digits to 10 logits."""
    return nn.Sequential(
        nn.Conv2d(1, 16, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(16, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Flatten(), nn.Linear(32 * 2 * 2, 10))


def train(model: nn.Module, x: Tensor, y: Tensor, epochs: int = 15, batch_size: int = 64,
          lr: float = 3e-3, seed: int = 0) -> nn.Module:
    """Adam on cross-entropy; returns the model in eval mode."""
    generator = torch.Generator().manual_seed(seed)
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    model.train()
    for _ in range(epochs):
        for batch in torch.randperm(len(x), generator=generator).split(batch_size):
            optimizer.zero_grad()
            nn.functional.cross_entropy(model(x[batch]), y[batch]).backward()
            optimizer.step()
    return model.eval()


def accuracy(model: nn.Module, x: Tensor, y: Tensor) -> float:
    with torch.no_grad():
        return (model(x).argmax(1) == y).float().mean().item()


def trained_digits_cnn(seed: int = 0, epochs: int = 15) -> tuple[nn.Module, tuple[Tensor, ...]]:
    """A digits CNN trained from `seed` (about 97% test accuracy) and its data split."""
    torch.manual_seed(seed)
    data = load_digits(seed)
    model = train(digits_cnn(), data[0], data[1], epochs=epochs, seed=seed)
    return model, data
