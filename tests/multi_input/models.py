"""captum's own multi-input test models, in float64, with inputs for them."""

from __future__ import annotations

import torch
from captum.testing.helpers.basic_models import (
    BasicLinearModel,
    BasicModel_MultiLayer,
    BasicModel_MultiLayer_MultiInput,
    ReLULinearModel,
)
from torch import nn

import fattr


def seeded(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a - b).abs().max() / b.abs().max().clamp_min(1e-30)).item()


def close(ours, theirs, tol: float = 1e-9) -> None:
    """Tuples of attributions equal input by input, to a relative tolerance."""
    assert isinstance(ours, tuple) and len(ours) == len(theirs)
    for a, b in zip(ours, theirs):
        assert a.shape == b.shape, (a.shape, b.shape)
        assert rel_err(a, b.to(a.dtype)) <= tol, rel_err(a, b.to(a.dtype))


def multi_input() -> nn.Module:
    """x1, x2, x3 (B, 3) and an int `scale`: model(scale * (x1 + x2 + x3))."""
    return BasicModel_MultiLayer_MultiInput().double().eval()


def multi_layer(multi_input_module: bool = False) -> nn.Module:
    """BasicModel_MultiLayer(x, add_input=None): with `multi_input_module` its `multi_relu`
    takes two tensors and returns a tuple of two."""
    return BasicModel_MultiLayer(multi_input_module=multi_input_module).double().eval()


def relu_linear() -> nn.Module:
    """x1, x2 (B, 3) -> l3(relu(cat(l1(x1), l2(x2))))."""
    return ReLULinearModel().double().eval()


def linear_two() -> nn.Module:
    """x1 (B, 3), x2 (B, 4) -> Linear(7, 1) on their concatenation."""
    torch.manual_seed(0)
    return BasicLinearModel().double().eval()


def three_inputs(batch: int = 4, seed: int = 0) -> tuple[torch.Tensor, ...]:
    g = seeded(seed)
    return tuple(torch.randn(batch, 3, dtype=torch.float64, generator=g) * 3 for _ in range(3))


def functional(net: nn.Module):
    return fattr.functional(net)
