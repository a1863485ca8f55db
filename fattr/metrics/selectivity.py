"""Selectivity (Montavon et al. 2018, as implemented in tootorch): remove the most relevant
feature, attribute again, repeat, and watch the score fall."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import torch
from torch import Tensor

from fattr.core.baselines import BaselineSpec, baselines_for
from fattr.core.call import Call, finish, prepare
from fattr.core.checks import check_count
from fattr.core.chunking import check_batch_size
from fattr.core.inputs import Inputs, flatten_inputs, rows_of, split_flat
from fattr.core.model import Model, ModelFn, Params
from fattr.core.targets import TargetSpec
from fattr.metrics.base import (
    attribution_of,
    check_attr_fn,
    check_like,
    check_per_example,
    forwarded,
    model_of,
    row_scores,
    trapezoid,
)


def selectivity(f: ModelFn, params: Params, x: Tensor | Inputs, attr_fn: Callable[..., Any],
                target: TargetSpec = None, steps: int = 10, per_step: int = 1,
                fill: BaselineSpec | tuple = None, *, batch_size: int | None = None,
                output: Callable[[Any], Tensor] | None = None, model_args: Any = (),
                model_kwargs: Mapping[str, Any] | None = None, **per_call: Any) -> Tensor:
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
        f, params, x, target: the model function, parameters, inputs (B, ...) (or a tuple of
            inputs, one per model input) and target.
        attr_fn: any attribution function `attr(params, x, target, **per_call)` built from the
            same model function; its result is shaped like x or broadcasts over it (a
            (B, 1, H, W) map removes whole pixels); ranked by value, largest first. For a
            tuple x it returns a tuple and the features of all inputs are ranked together.
        steps: removal steps (default 10); the curve has steps + 1 points. The steps run one
            after another (each needs the previous input); examples run batched.
        per_step: features removed per step (default 1, as tootorch).
        fill: what a removed feature becomes: None (0, tootorch's choice), a number or a
            tensor broadcastable to x (a tuple, one per input, for a tuple x).
        batch_size: the most model inputs per forward call when recording scores (give
            `attr_fn` its own batch_size).
        output: picks a tensor from the model's output.
        model_args, model_kwargs: extra forward arguments, passed to the model and to
            `attr_fn`; per-example tensors (first axis B) follow their example.
        **per_call: passed to `attr_fn` at every step (e.g. `baseline=` of IG).

    Returns a Tensor (B,) (one value for a per-example model).

    >>> fattr.metrics.selectivity(f, params, x, fattr.saliency(f), labels, steps=20)

    Montavon, Samek, Müller, "Methods for Interpreting and Understanding Deep Neural Networks"
    (2018), https://arxiv.org/abs/1706.07979; tootorch (Jaehyuk Heo),
    https://github.com/TooTouch/tootorch (saliency/evaluation_methods.py)
    """
    method = "selectivity"
    model = model_of(f, output, method)
    check_attr_fn(attr_fn, method)
    check_count(steps, "steps", method)
    check_count(per_step, "per_step", method)
    check_batch_size(batch_size, method)
    call = prepare(model, x, target, model_args, model_kwargs)
    check_per_example(attr_fn, model, method)
    if call.batch == 0:
        return call.first.new_zeros(0)
    fills = baselines_for(fill, call.inputs, method, "fill")
    per_call = {**per_call, **forwarded(model_args, model_kwargs)}
    current, removed, scores = call.inputs, None, []
    for _ in range(steps):  # sequential by nature: each step attributes the previous input
        scores.append(scores_of(model, params, call, current, batch_size))
        relevance = attribution_of(attr_fn, params, call, current, per_call, method)
        relevance = tuple(check_like(a, t, method, "the attribution", broadcast=True)
                          for a, t in zip(relevance, current))
        flat = flatten_inputs(relevance).detach()
        removed = torch.zeros_like(flat, dtype=torch.bool) if removed is None else removed
        top = flat.masked_fill(removed, -torch.inf).topk(min(per_step, flat.shape[1]), 1).indices
        removed = removed.scatter(1, top, True)
        masks = split_flat(removed, relevance)
        current = tuple(torch.where(m.expand(t.shape), v, t)
                        for m, v, t in zip(masks, fills, call.inputs))
    scores.append(scores_of(model, params, call, current, batch_size))
    return finish(model, trapezoid(torch.cat(scores)))


def scores_of(model: Model, params: Params, call: Call, inputs: Inputs,
          batch_size: int | None) -> Tensor:
    """The target score of every example of `inputs` (1, B)."""
    return row_scores(model, params, call, 1, lambda _, b: rows_of(inputs, b), batch_size)
