"""Completeness gap: how far an attribution is from summing to the output difference."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor

from fattr.core.baselines import BaselineSpec, baseline_like
from fattr.core.checks import check_input
from fattr.core.gradients import scores
from fattr.core.model import ModelFn, Params, as_model
from fattr.core.targets import TargetSpec
from fattr.errors import FattrError


def completeness_gap(f: ModelFn, params: Params, x: Tensor, attribution: Tensor,
                     target: TargetSpec = None, baseline: BaselineSpec = None, *,
                     output: Callable[[Any], Tensor] | None = None) -> Tensor:
    """Per example: `sum(attribution) - (f(x)_t - f(baseline)_t)`, shape (B,).

    Zero for complete methods (IG up to quadrature error, DeepLIFT on ReLU networks, LRP-0 on
    bias-free networks). Same sign as captum's convergence delta.
    """
    model = as_model(f, output, "completeness_gap")
    check_input(x, "completeness_gap")
    if not isinstance(attribution, Tensor) or attribution.shape != x.shape:
        got = (tuple(attribution.shape) if isinstance(attribution, Tensor)
               else type(attribution).__name__)
        raise FattrError(f"completeness_gap: attribution must have x's shape {tuple(x.shape)}, "
                         f"got {got}.")
    if model.per_example:
        x, attribution = x.unsqueeze(0), attribution.unsqueeze(0)
        target = target.unsqueeze(0) if isinstance(target, Tensor) else target
    chosen = model.target(target, x)
    start = baseline_like(baseline, x, "completeness_gap")
    both = scores(model, params, torch.cat([x, start]), chosen,
                  rows=torch.arange(x.shape[0], device=x.device).repeat(2))
    gap = attribution.flatten(1).sum(1) - (both[: x.shape[0]] - both[x.shape[0]:])
    return gap.squeeze(0) if model.per_example else gap
