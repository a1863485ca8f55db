"""Baselines (references) for path and difference methods."""

from __future__ import annotations

import numbers

import torch
from torch import Tensor

from fattr.core.checks import check_broadcasts
from fattr.errors import FattrError

BaselineSpec = Tensor | float | int | None


def baseline_like(baseline: BaselineSpec, x: Tensor, method: str, name: str = "baseline") -> Tensor:
    """`baseline` as a tensor broadcast to x's shape: None gives zeros, a number a constant,
    a tensor must broadcast to x (per example (B, ...) or shared (...))."""
    if baseline is None:
        return torch.zeros_like(x)
    if isinstance(baseline, numbers.Real) and not isinstance(baseline, bool):
        return torch.full_like(x, float(baseline))
    if not isinstance(baseline, Tensor):
        raise FattrError(f"{method}: {name} must be None, a number or a tensor broadcastable to "
                         f"x, got {type(baseline).__name__}.")
    check_broadcasts(baseline, x.shape, name, method, "x",
                     f"Pass one baseline per example {tuple(x.shape)}, one shared baseline "
                     f"{tuple(x.shape[1:])}, or a number.")
    return baseline.to(dtype=x.dtype, device=x.device).expand(x.shape)


def baseline_distribution(baselines: Tensor | None, x: Tensor, method: str) -> Tensor:
    """A set of N baselines (N, *x.shape[1:]) to draw from (GradientSHAP, DeepLiftShap)."""
    if baselines is None:
        return torch.zeros_like(x[:1])
    if isinstance(baselines, numbers.Real) and not isinstance(baselines, bool):
        return torch.full_like(x[:1], float(baselines))
    if not isinstance(baselines, Tensor) or baselines.ndim != x.ndim or \
            baselines.shape[1:] != x.shape[1:] or baselines.shape[0] == 0:
        got = tuple(baselines.shape) if isinstance(baselines, Tensor) else type(baselines).__name__
        raise FattrError(
            f"{method}: baselines must be a distribution of shape (N, *{tuple(x.shape[1:])}) with "
            f"N >= 1 (one row per reference input), got {got}.")
    return baselines.to(dtype=x.dtype, device=x.device)
