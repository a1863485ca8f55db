"""Selectivity (Montavon et al. 2018, as implemented in tootorch): remove the most relevant
feature, attribute again, repeat, and watch the score fall."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor

from fattr.core.baselines import BaselineSpec, baseline_like
from fattr.core.checks import check_count
from fattr.core.chunking import check_batch_size
from fattr.core.model import ModelFn, Params, as_model
from fattr.core.targets import TargetSpec
from fattr.metrics.base import (
    call_attribution,
    check_attr_fn,
    check_like,
    check_per_example,
    prepare,
    stacked_scores,
    trapezoid,
)


def selectivity(f: ModelFn, params: Params, x: Tensor, attr_fn: Callable[..., Tensor],
                target: TargetSpec = None, steps: int = 10, per_step: int = 1,
                fill: BaselineSpec = None, *, batch_size: int | None = None,
                output: Callable[[Any], Tensor] | None = None, **per_call: Any) -> Tensor:
    """Area under the selectivity curve: remove the most relevant feature(s), re-compute the
    attribution on the changed input, remove again, and record the target score.

        x^0 = x;  x^(s+1) = x^s with its top-`per_step` features by A(x^s) (among those not
        yet removed) set to `fill`;  SEL(x) = integral over s/steps of f(x^s)_t

    tootorch's procedure, step by step: at every step s = 0..steps the score f(x^s)_t is
    recorded and the attribution of x^s is computed; then the element with the largest
    attribution is set to 0 (`fill`). fattr differs in two documented ways: a removed feature
    is never picked again (tootorch takes the argmax over all elements, so it can pick an
    element it already zeroed and stall), and `per_step` features go per step (tootorch: 1).
    The curve is summarised by the trapezoid area over s/steps in [0, 1] (tootorch keeps the
    raw curve); lower is better.

    Args:
        f, params, x, target: the model function, parameters, inputs (B, ...) and target.
        attr_fn: any attribution function `attr(params, x, target, **per_call)` built from the
            same model function; its result is shaped like x or broadcasts over it (a
            (B, 1, H, W) map removes whole pixels); ranked by value, largest first.
        steps: removal steps (default 10); the curve has steps + 1 points. The steps run one
            after another (each needs the previous input); examples run batched.
        per_step: features removed per step (default 1, as tootorch).
        fill: what a removed feature becomes: None (0, tootorch's choice), a number or a
            tensor broadcastable to x.
        batch_size: the most model inputs per forward call when recording scores (give
            `attr_fn` its own batch_size).
        output: picks a tensor from the model's output.
        **per_call: passed to `attr_fn` at every step (e.g. `baseline=` of IG).

    Returns a Tensor (B,) (one value for a per-example model).

    >>> fattr.metrics.selectivity(f, params, x, fattr.saliency(f), labels, steps=20)

    Montavon, Samek, Müller, "Methods for Interpreting and Understanding Deep Neural Networks"
    (2018), https://arxiv.org/abs/1706.07979; tootorch (Jaehyuk Heo),
    https://github.com/TooTouch/tootorch (saliency/evaluation_methods.py)
    """
    method = "selectivity"
    model = as_model(f, output, method)
    check_attr_fn(attr_fn, method)
    check_count(steps, "steps", method)
    check_count(per_step, "per_step", method)
    check_batch_size(batch_size, method)
    batch = prepare(model, x, target)
    check_per_example(attr_fn, batch.single, method)
    x = batch.x
    if batch.size == 0:
        return x.new_zeros(0)
    fill = baseline_like(fill, x, method, "fill")
    target = batch.target.spec
    current = x
    removed = None
    scores = []
    for _ in range(steps):  # sequential by nature: each step attributes the previous input
        scores.append(stacked_scores(model, params, current[None], batch.target, batch_size))
        relevance = call_attribution(attr_fn, params, current, target, per_call, batch.single)
        relevance = check_like(relevance, current, method, "the attribution", broadcast=True)
        if removed is None:
            removed = torch.zeros(relevance.shape, dtype=torch.bool, device=x.device)
        candidates = relevance.detach().flatten(1).masked_fill(removed.flatten(1), -torch.inf)
        top = candidates.topk(min(per_step, candidates.shape[1]), dim=1).indices
        removed = removed.flatten(1).scatter(1, top, True).reshape(removed.shape)
        current = torch.where(removed.expand(x.shape), fill, x)
    scores.append(stacked_scores(model, params, current[None], batch.target, batch_size))
    return batch.result(trapezoid(torch.cat(scores)))
