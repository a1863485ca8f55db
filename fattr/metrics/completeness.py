"""Completeness: how far an attribution's sum is from the output difference it explains."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import torch
from torch import Tensor

from fattr.core.baselines import BaselineSpec, baselines_for
from fattr.core.call import finish, prepare
from fattr.core.inputs import Inputs
from fattr.core.model import ModelFn, Params
from fattr.core.targets import TargetSpec
from fattr.metrics.base import attributions_for, model_of


def completeness(f: ModelFn, params: Params, x: Tensor | Inputs, attribution: Tensor | Inputs,
                 target: TargetSpec = None, baseline: BaselineSpec | tuple = None, *,
                 output: Callable[[Any], Tensor] | None = None, model_args: Any = (),
                 model_kwargs: Mapping[str, Any] | None = None) -> Tensor:
    """Relative completeness error per example (0 for a complete attribution).

        COMP(x) = |sum(a) - (f(x)_t - f(x')_t)| / |f(x)_t - f(x')_t|

    The numerator is the gap of `fattr.completeness_gap` (signed, in output units); this metric
    scales it by the output difference so that methods and models compare. A zero output
    difference gives the absolute gap. IG (up to quadrature error), DeepLIFT on ReLU networks,
    LRP-0 on bias-free networks and Shapley values score 0.

    Args:
        f, params, x, target: the model function, parameters, inputs (B, ...) (or a tuple of
            inputs, one per model input) and target. The model must be in eval mode: a
            training-mode model is refused before any forward pass.
        attribution: shaped like x (a tuple for a tuple x); the sum runs over every input.
        baseline: the reference x' the attribution explains: None (zeros), a number or a
            tensor broadcastable to x (for a tuple x: a tuple, one per input, or None or a
            number for all).
        output: picks a tensor from the model's output.
        model_args, model_kwargs: extra forward arguments, `model(*x, *model_args,
            **model_kwargs)`; the baseline is evaluated with the same arguments.

    Returns a Tensor (B,) (one value for a per-example model), differentiable.

    >>> a = fattr.integrated_gradients(f, steps=64)(params, x, labels)
    >>> fattr.metrics.completeness(f, params, x, a, labels)   # ~ 0

    Sundararajan, Taly, Yan, "Axiomatic Attribution for Deep Networks" (2017),
    https://arxiv.org/abs/1703.01365; Ancona, Ceolini, Öztireli, Gross, "Towards better
    understanding of gradient-based attribution methods" (2018), https://arxiv.org/abs/1711.06104
    """
    method = "completeness"
    model = model_of(f, output, method)
    call = prepare(model, x, target, model_args, model_kwargs)
    attributions = attributions_for(attribution, call, model, method)
    starts = baselines_for(baseline, call.inputs, method)
    both = tuple(torch.cat([t, s]) for t, s in zip(call.inputs, starts))
    rows = torch.arange(call.batch, device=call.first.device).repeat(2)
    scores = call.score(model, params, both, rows)  # f(x) then f(x'), one forward
    difference = scores[:call.batch] - scores[call.batch:]
    total = sum(a.flatten(1).sum(1) for a in attributions)
    gap = (total - difference).abs()
    return finish(model, gap / difference.abs().where(difference != 0, 1.0))
