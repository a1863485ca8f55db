"""Models and peer references shared by the LRP tests."""

from __future__ import annotations

from itertools import pairwise

import torch
from torch import nn

from tests.conftest import randomize_batchnorm


def relu_mlp(seed: int = 0, bias: bool = True, widths: tuple[int, ...] = (6, 8, 8, 3)
             ) -> nn.Module:
    """A float64 ReLU MLP in eval mode."""
    torch.manual_seed(seed)
    layers: list[nn.Module] = []
    for i, (a, b) in enumerate(pairwise(widths)):
        layers += [nn.Linear(a, b, bias=bias)] + ([nn.ReLU()] if i < len(widths) - 2 else [])
    return nn.Sequential(*layers).double().eval()


def conv_net(seed: int = 0, bias: bool = True, batchnorm: bool = True) -> nn.Module:
    """A float64 CNN: conv (+BN), in-place ReLU, max and average pooling, conv, linear head."""
    torch.manual_seed(seed)
    net = nn.Sequential(
        nn.Conv2d(2, 4, 3, padding=1, bias=bias),
        nn.BatchNorm2d(4) if batchnorm else nn.Identity(), nn.ReLU(inplace=True),
        nn.MaxPool2d(2), nn.Conv2d(4, 6, 3, padding=1, bias=bias), nn.ReLU(),
        nn.AvgPool2d(2), nn.Flatten(), nn.Linear(24, 5, bias=bias)).double()
    randomize_batchnorm(net)
    return net.eval()


class Residual(nn.Module):
    """A bias-free residual ReLU CNN written with functional calls (F.relu, +, mean)."""

    def __init__(self, seed: int = 0):
        super().__init__()
        torch.manual_seed(seed)
        self.stem = nn.Conv2d(2, 4, 3, padding=1, bias=False)
        self.body = nn.Conv2d(4, 4, 3, padding=1, bias=False)
        self.head = nn.Linear(4, 3, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = torch.nn.functional.relu(self.stem(x))
        h = (h + self.body(h)).relu()
        return self.head(h.mean((2, 3)))


def vgg11_bn(seed: int = 0, classes: int = 10) -> nn.Module:
    """torchvision vgg11_bn with random weights and randomized BatchNorm statistics."""
    import torchvision

    torch.manual_seed(seed)
    net = torchvision.models.vgg11_bn(num_classes=classes)
    randomize_batchnorm(net)
    return net.eval()


def one_hot_times_output(target: torch.Tensor):
    """zennit's attr_output for initial relevance = the target logit."""
    return lambda out: nn.functional.one_hot(target, out.shape[1]).to(out) * out


def zennit_lrp(net: nn.Module, composite, x: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """zennit's relevance (Gradient attributor, initial relevance = the target logit)."""
    from zennit.attribution import Gradient

    with Gradient(net, composite) as attributor:
        _, relevance = attributor(x.clone(), one_hot_times_output(target))
    return relevance.detach()


def agreement(ours: torch.Tensor, theirs: torch.Tensor) -> tuple[float, float]:
    """(lowest per-example correlation, highest per-example max relative error)."""
    a, b = ours.detach().flatten(1), theirs.flatten(1)
    corr = min(float(torch.corrcoef(torch.stack([u, v]))[0, 1]) for u, v in zip(a, b))
    rel = float(((a - b).abs().amax(1) / b.abs().amax(1)).max())
    return corr, rel
