"""Shared fixtures: seeded float64 models, small real architectures, the digits data set."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import NamedTuple

import pytest
import torch
from torch import Tensor, nn

if os.environ.get("PYTEST_XDIST_WORKER"):
    torch.set_num_threads(1)  # one core per xdist worker


@contextmanager
def one_thread() -> Iterator[None]:
    """Run the block on one intra-op thread: small models train several times faster, and
    reproducibly, on one thread of a loaded 2-core machine (measured 10x to 50x)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)


def mlp(seed: int = 0, d_in: int = 5, hidden: int = 8, d_out: int = 3,
        act: type[nn.Module] = nn.ReLU) -> nn.Module:
    """A small float64 MLP in eval mode."""
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(d_in, hidden), act(), nn.Linear(hidden, hidden), act(),
                         nn.Linear(hidden, d_out)).double().eval()


def small_cnn(seed: int = 0, classes: int = 4) -> nn.Module:
    """A float64 CNN with BatchNorm, in-place ReLU, max pooling and a linear head."""
    torch.manual_seed(seed)
    net = nn.Sequential(
        nn.Conv2d(1, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(inplace=True),
        nn.MaxPool2d(2), nn.Conv2d(4, 6, 3, padding=1), nn.ReLU(),
        nn.AdaptiveAvgPool2d(2), nn.Flatten(), nn.Linear(24, classes)).double()
    with torch.no_grad():  # non-trivial BatchNorm statistics
        bn = net[1]
        bn.running_mean.uniform_(-0.5, 0.5)
        bn.running_var.uniform_(0.5, 2.0)
        bn.weight.uniform_(0.5, 1.5)
        bn.bias.uniform_(-0.2, 0.2)
    return net.eval()


def resnet18(seed: int = 0, classes: int = 10) -> nn.Module:
    """torchvision resnet18 with random weights and randomized BatchNorm statistics."""
    import torchvision

    torch.manual_seed(seed)
    net = torchvision.models.resnet18(num_classes=classes)
    randomize_batchnorm(net)
    return net.eval()


def randomize_batchnorm(net: nn.Module) -> None:
    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                m.running_mean.uniform_(-0.2, 0.2)
                m.running_var.uniform_(0.5, 1.5)
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.2, 0.2)


def state_snapshot(module: nn.Module) -> dict:
    """Everything a method must leave untouched: tensors, module types, flags and hooks."""
    return {
        "tensors": {k: v.detach().clone() for k, v in module.state_dict(keep_vars=True).items()},
        "types": [(n, type(m)) for n, m in module.named_modules()],
        "training": [(n, m.training) for n, m in module.named_modules()],
        "hooks": [(n, len(m._forward_hooks), len(m._forward_pre_hooks), len(m._backward_hooks),
                   len(getattr(m, "_backward_pre_hooks", {})))
                  for n, m in module.named_modules()],
        "inplace": [(n, getattr(m, "inplace", None)) for n, m in module.named_modules()],
        "requires_grad": [(n, p.requires_grad) for n, p in module.named_parameters()],
    }


def assert_unchanged(module: nn.Module, before: dict) -> None:
    after = state_snapshot(module)
    assert before["types"] == after["types"]
    assert before["training"] == after["training"]
    assert before["hooks"] == after["hooks"]
    assert before["inplace"] == after["inplace"]
    assert before["requires_grad"] == after["requires_grad"]
    for k, v in before["tensors"].items():
        assert torch.equal(v, after["tensors"][k]), k


@pytest.fixture
def digits():
    """scikit-learn's bundled handwritten digits: x (N, 1, 8, 8) in [0, 1], y (N,)."""
    from sklearn.datasets import load_digits

    d = load_digits()
    x = torch.tensor(d.images, dtype=torch.float32).unsqueeze(1) / 16.0
    return x, torch.tensor(d.target)


class Directional(NamedTuple):
    analytic: Tensor  # <grad loss(params), direction> by torch.func.grad
    numeric: Tensor   # the central difference along the same direction
    grads: dict[str, Tensor]


def directional_derivative(loss: Callable[[dict[str, Tensor]], Tensor],
                           params: dict[str, Tensor], h: float = 1e-6) -> Directional:
    """d/dt loss(params + t v) at t = 0 along a random direction v (torch's global RNG), by
    `torch.func.grad` and by central differences with step h: the check that an attribution
    can sit in a training loss (use float64 models)."""
    grads = torch.func.grad(loss)(params)
    direction = {k: torch.randn_like(v) for k, v in params.items()}
    plus = loss({k: v + h * direction[k] for k, v in params.items()})
    minus = loss({k: v - h * direction[k] for k, v in params.items()})
    analytic = sum((grads[k] * direction[k]).sum() for k in params)
    return Directional(analytic, (plus - minus) / (2 * h), grads)  # type: ignore[arg-type]


def forward_calls(module: nn.Module, fn: Callable[[], object]) -> int:
    """How many times `module` runs its forward while `fn()` runs (a temporary hook)."""
    calls: list[int] = []
    handle = module.register_forward_hook(lambda *_: calls.append(1))
    try:
        fn()
    finally:
        handle.remove()
    return len(calls)
