"""Completeness: how far an attribution's sum is from the output difference it explains."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from torch import Tensor

from fattr.core.baselines import BaselineSpec
from fattr.core.model import ModelFn, Params
from fattr.core.targets import TargetSpec
from fattr.gradient.completeness import completeness_gap


def completeness(f: ModelFn, params: Params, x: Tensor, attribution: Tensor,
                 target: TargetSpec = None, baseline: BaselineSpec = None, *,
                 output: Callable[[Any], Tensor] | None = None) -> Tensor:
    """Relative completeness error per example (0 for a complete attribution).

        COMP(x) = |sum(a) - (f(x)_t - f(x')_t)| / |f(x)_t - f(x')_t|

    The numerator is `fattr.completeness_gap` (signed, in output units); this metric scales it
    by the output difference so that methods and models compare. A zero output difference
    gives the absolute gap. IG (up to quadrature error), DeepLIFT on ReLU networks, LRP-0 on
    bias-free networks and Shapley values score 0.

    Args:
        f, params, x, target: the model function, parameters, inputs (B, ...) and target.
        attribution: shaped like x.
        baseline: the reference x' the attribution explains: None (zeros), a number or a
            tensor broadcastable to x.
        output: picks a tensor from the model's output.

    Returns a Tensor (B,) (one value for a per-example model), differentiable.

    >>> a = fattr.integrated_gradients(f, steps=64)(params, x, labels)
    >>> fattr.metrics.completeness(f, params, x, a, labels)   # ~ 0

    Sundararajan, Taly, Yan, "Axiomatic Attribution for Deep Networks" (2017),
    https://arxiv.org/abs/1703.01365; Ancona, Ceolini, Öztireli, Gross, "Towards better
    understanding of gradient-based attribution methods" (2018), https://arxiv.org/abs/1711.06104
    """
    gap = completeness_gap(f, params, x, attribution, target, baseline, output=output)
    total = attribution.reshape((*gap.shape, -1)).sum(-1)
    difference = (total - gap).abs()  # f(x) - f(x') recovered from the gap
    return gap.abs() / difference.where(difference > 0, 1.0)
