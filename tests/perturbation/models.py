"""Models, masks and seeded generators shared by the perturbation tests."""

from __future__ import annotations

import torch
from torch import nn

from tests.conftest import small_cnn

# Five features on the 8x8 image of `small_cnn`: quadrants, the last one split in two.
FIVE = torch.tensor([[0, 0, 1, 1], [0, 0, 1, 1], [2, 2, 3, 3], [2, 2, 4, 4]]) \
    .repeat_interleave(2, 0).repeat_interleave(2, 1)


def seeded(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a - b).abs().max() / b.abs().max()).item()


def toy_net() -> nn.Module:
    """captum's test network (REFERENCES.md "Perturbation"): Linear(3,3)=I -> Linear(3,4)
    W=ones b=[-10,1,1,1] -> ReLU -> Linear(4,2) W=ones b=[-1,1], float64."""
    net = nn.Sequential(nn.Linear(3, 3), nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 2)).double()
    with torch.no_grad():
        net[0].weight.copy_(torch.eye(3))
        net[0].bias.zero_()
        net[1].weight.fill_(1)
        net[1].bias.copy_(torch.tensor([-10.0, 1, 1, 1]))
        net[3].weight.fill_(1)
        net[3].bias.copy_(torch.tensor([-1.0, 1]))
    return net.eval()


def image_case(batch: int = 3):
    """small_cnn with a float64 batch of 8x8 images, targets and a small random baseline."""
    net = small_cnn()
    x = torch.randn(batch, 1, 8, 8, dtype=torch.float64, generator=seeded(10))
    target = torch.tensor([3, 0, 1, 2, 0, 1][:batch])
    baseline = 0.1 * torch.randn(x.shape, dtype=torch.float64, generator=seeded(11))
    return net, x, target, baseline


class TokenModel(nn.Module):
    """Token ids (B, L) -> embedding -> mean over tokens -> 3 logits (float64)."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.embed = nn.Embedding(10, 4).double()
        self.head = nn.Sequential(nn.Linear(4, 6), nn.Tanh(), nn.Linear(6, 3)).double()

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return self.head(self.embed(ids).mean(1))
