"""Completeness gap: how far an attribution is from summing to the output difference."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor

from fattr.core.baselines import BaselineSpec, baselines_for
from fattr.core.call import finish, prepare
from fattr.core.inputs import per_input
from fattr.core.model import ModelFn, Params, as_model
from fattr.core.targets import TargetSpec
from fattr.errors import FattrError


def completeness_gap(f: ModelFn, params: Params, x: Tensor | tuple[Tensor, ...],
                     attribution: Tensor | tuple[Tensor, ...], target: TargetSpec = None,
                     baseline: BaselineSpec | tuple = None, *,
                     output: Callable[[Any], Tensor] | None = None, model_args: Any = (),
                     model_kwargs: dict[str, Any] | None = None) -> Tensor:
    """Per example: `sum(attribution) - (f(x)_t - f(baseline)_t)`, shape (B,).

    Zero for complete methods (IG up to quadrature error, DeepLIFT on ReLU networks, LRP-0 on
    bias-free networks). Same sign as captum's convergence delta. For a tuple x, `attribution`
    and `baseline` are tuples too and the sum runs over every input.
    """
    model = as_model(f, output, "completeness_gap")
    call = prepare(model, x, target, model_args, model_kwargs, params=params)
    given = per_input(attribution, len(call.inputs), "attribution", "completeness_gap",
                      atom=lambda a: call.single)
    if model.per_example:
        given = tuple(a.unsqueeze(0) if isinstance(a, Tensor) else a for a in given)
    for i, (a, t) in enumerate(zip(given, call.inputs)):
        if not isinstance(a, Tensor) or a.shape != t.shape:
            got = tuple(a.shape) if isinstance(a, Tensor) else type(a).__name__
            which = "attribution" if call.single else f"attribution[{i}]"
            raise FattrError(f"completeness_gap: {which} must have the shape of its input "
                             f"{tuple(t.shape)}, got {got}.")
    starts = baselines_for(baseline, call.inputs, "completeness_gap")
    both = tuple(torch.cat([t, s]) for t, s in zip(call.inputs, starts))
    rows = torch.arange(call.batch, device=call.first.device).repeat(2)
    scores = call.score(model, params, both, rows)
    total = sum(a.reshape(a.shape[0], -1).sum(1) for a in given)  # also for (B,) inputs
    gap = total - (scores[: call.batch] - scores[call.batch:])
    return finish(model, gap)
