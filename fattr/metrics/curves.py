"""Deletion, insertion and pixel flipping: remove features in order of relevance, watch the score.

One engine: rank the features of each example by attribution, build the input of every
(step, example) pair inside the chunk that evaluates it (so S copies of x are never held at
once), record the target score, and integrate the curve over the fraction removed. The named
metrics only differ in what a removed feature becomes.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import Any, Union

import torch
from torch import Tensor

from fattr.core.baselines import BaselineSpec, baselines_for
from fattr.core.blur import blur_stack
from fattr.core.call import Call, finish, prepare
from fattr.core.checks import check_count, check_generator
from fattr.core.chunking import check_batch_size
from fattr.core.inputs import Inputs, flatten_inputs, per_input, rows_of, split_flat
from fattr.core.model import Model, ModelFn, Params
from fattr.core.targets import TargetSpec
from fattr.errors import FattrError
from fattr.metrics.base import (
    attributions_for,
    model_of,
    ranks,
    removal_counts,
    row_scores,
    trapezoid,
)

# fill(rows, removed, example_of_each_row) -> the model inputs (one tensor per input)
Fill = Callable[[Inputs, Inputs, Tensor], Inputs]
Output = Union[Callable[[Any], Tensor], None]
ForwardKwargs = Union[Mapping[str, Any], None]


def removal_curve(model: Model, params: Params, call: Call, order: Inputs, steps: int,
                  fill: Fill, batch_size: int | None) -> Tensor:
    """Target scores (steps + 1, B) after removing floor(i * n / steps) of the n features,
    i = 0..steps, in the order of `order` (one (B, ...) per input, ranks over all inputs
    together, rank 0 first); each order broadcasts over its input."""
    counts = removal_counts(sum(math.prod(o.shape[1:]) for o in order), steps,
                            call.first.device)

    def inputs_of(step: Tensor, example: Tensor) -> Inputs:
        removed = tuple((o[example] < counts[step].view(-1, *(1,) * (o.ndim - 1)))
                        .expand(-1, *x.shape[1:]) for o, x in zip(order, call.inputs))
        return fill(rows_of(call.inputs, example), removed, example)

    return row_scores(model, params, call, steps + 1, inputs_of, batch_size)


def replace_with(values: Inputs, inserted: bool = False) -> Fill:
    """Removed features take the values of `values` (one (B, ...) per input) of their example;
    with `inserted`, the removed features are the ones KEPT from x and the rest are `values`."""

    def fill(rows: Inputs, removed: Inputs, example: Tensor) -> Inputs:
        pick = lambda m, v, r: torch.where(m, r, v[example]) if inserted else \
            torch.where(m, v[example], r)
        return tuple(pick(m, v, r) for m, v, r in zip(removed, values, rows))

    return fill


def references(call: Call, baseline: Any, method: str,
               default: Callable[[Tensor], Tensor]) -> Inputs:
    """One reference per input: `baselines_for(baseline)`, except that an input whose
    baseline is None gets `default(x)` (the metric's own reference)."""
    given = baselines_for(baseline, call.inputs, method)
    specs = per_input(baseline, len(call.inputs), "baseline", method)
    return tuple(default(x) if spec is None else b
                 for spec, x, b in zip(specs, call.inputs, given))


def curve_metric(method: str, f: ModelFn, params: Params, x: Any, attribution: Any,
                 target: TargetSpec, steps: int, batch_size: int | None, output: Output,
                 fill: Callable[[Call], Fill], descending: bool = True,
                 model_args: Any = (), model_kwargs: ForwardKwargs = None) -> Tensor:
    """The shared boundary of the curve metrics: validate, rank the features of all inputs
    together, evaluate, integrate."""
    model = model_of(f, output, method)
    check_count(steps, "steps", method)
    check_batch_size(batch_size, method)
    call = prepare(model, x, target, model_args, model_kwargs)
    attributions = attributions_for(attribution, call, model, method, broadcast=True)
    if call.batch == 0:
        return call.first.new_zeros(0)
    order = split_flat(ranks(flatten_inputs(attributions), descending), attributions)
    curve = removal_curve(model, params, call, order, steps, fill(call), batch_size)
    return finish(model, trapezoid(curve))


def deletion(f: ModelFn, params: Params, x: Tensor | Inputs, attribution: Tensor | Inputs,
             target: TargetSpec = None, steps: int = 20, baseline: BaselineSpec | tuple = None,
             *, batch_size: int | None = None, output: Output = None, model_args: Any = (),
             model_kwargs: ForwardKwargs = None) -> Tensor:
    """Area under the deletion curve: the target score as the most relevant features are removed.

        DEL(x) = integral_0^1 f(x with the top-q fraction of features set to the baseline)_t dq

    estimated by the trapezoid rule at q = 0, 1/steps, ..., 1 (floor(q n) of the n features
    removed). Lower is better: a faithful attribution destroys the score quickly.

    Args:
        f, params, x, target: the model function, its parameters, inputs (B, ...) (or a tuple
            of inputs, one per model input), target.
        attribution: shaped like x (a tuple for a tuple x), or with size-1 axes that broadcast
            over x: a feature is one element of the attribution, so a (B, 1, H, W) map removes
            whole pixels (all channels) and a (B, C, H, W) map single channel values. Features
            are ranked by value (largest first; pass `attribution.abs()` to rank by magnitude);
            ties keep their order. The features of all inputs are ranked together, as one
            concatenated feature vector.
        steps: curve points minus one (default 20: 5% of the features per step).
        baseline: what removed features become: None (zeros, RISE's black image), a number,
            or a tensor broadcastable to x (for a tuple x: a tuple, one per input, or None or a
            number for all).
        batch_size: the most model inputs per forward call ((steps + 1) * B in all).
        output: picks a tensor from the model's output. The curve records the selected target
            score as the model returns it; RISE records class probabilities: pass
            `output=lambda out: out.softmax(-1)` for that.
        model_args, model_kwargs: extra forward arguments, `model(*x, *model_args,
            **model_kwargs)`; per-example tensors (first axis B) follow their example.

    Returns a Tensor (B,) (one value for a per-example model), differentiable in params and x.

    >>> a = fattr.integrated_gradients(f)(params, x, labels)
    >>> fattr.metrics.deletion(f, params, x, a.sum(1, keepdim=True), labels)

    Petsiuk, Das, Saenko, "RISE: Randomized Input Sampling for Explanation of Black-box
    Models" (2018), https://arxiv.org/abs/1806.07421
    """

    def fill(call: Call) -> Fill:
        return replace_with(baselines_for(baseline, call.inputs, "deletion"))

    return curve_metric("deletion", f, params, x, attribution, target, steps, batch_size,
                        output, fill, model_args=model_args, model_kwargs=model_kwargs)


def insertion(f: ModelFn, params: Params, x: Tensor | Inputs, attribution: Tensor | Inputs,
              target: TargetSpec = None, steps: int = 20, baseline: BaselineSpec | tuple = None,
              *, sigma: float = 5.0, batch_size: int | None = None, output: Output = None,
              model_args: Any = (), model_kwargs: ForwardKwargs = None) -> Tensor:
    """Area under the insertion curve: the score as the most relevant features are put back
    into a baseline image.

        INS(x) = integral_0^1 f(baseline with the top-q fraction of features of x)_t dq

    Higher is better. Same arguments as `deletion`, except:

    Args:
        baseline: the starting image: None gives x blurred with a Gaussian of `sigma` pixels
            (RISE's choice) for image batches (B, C, H, W) and zeros for other inputs; a number
            or a tensor broadcastable to x is used as given. For a tuple x, per input (a tuple
            with None entries blurs those inputs).
        sigma: blur of the default baseline, in pixels (default 5.0, RISE's value; truncated at
            4 sigma with zero padding, as `scipy.ndimage.gaussian_filter(mode="constant")`).

    Returns a Tensor (B,) (one value for a per-example model).

    Petsiuk, Das, Saenko, "RISE: Randomized Input Sampling for Explanation of Black-box
    Models" (2018), https://arxiv.org/abs/1806.07421
    """
    if isinstance(sigma, bool) or not isinstance(sigma, (int, float)) or not sigma > 0:
        raise FattrError(f"insertion: sigma must be > 0 (a number of pixels), got {sigma!r}.")

    def blurred(x: Tensor) -> Tensor:
        if x.ndim != 4:
            return torch.zeros_like(x)
        return blur_stack(x, torch.tensor([float(sigma)], dtype=x.dtype, device=x.device))[0]

    def fill(call: Call) -> Fill:
        return replace_with(references(call, baseline, "insertion", blurred), inserted=True)

    return curve_metric("insertion", f, params, x, attribution, target, steps, batch_size,
                        output, fill, model_args=model_args, model_kwargs=model_kwargs)


def pixel_flipping(f: ModelFn, params: Params, x: Tensor | Inputs, attribution: Tensor | Inputs,
                   target: TargetSpec = None, steps: int = 20,
                   baseline: BaselineSpec | tuple = None, *,
                   generator: torch.Generator | None = None, batch_size: int | None = None,
                   output: Output = None, model_args: Any = (),
                   model_kwargs: ForwardKwargs = None) -> Tensor:
    """Area under the pixel-flipping (MoRF) curve: features are flipped to random values in the
    order of relevance (Samek et al. 2017), most relevant first.

        PF(x) = integral_0^1 f(x with the top-q fraction of features replaced by noise)_t dq

    Removed features get values drawn once per example, uniform in [min(x_b), max(x_b)]
    (Samek et al.'s uniform replacement; for a tuple x, each input's own range), from
    `generator`; one draw serves every step, so the curve changes only where features are
    flipped. Lower is better. Samek et al. report the AOPC, mean_k (f(x) - f(x^(k))); with the
    same points that is f(x) minus the mean of the curve, so the two rank attributions alike.
    Same arguments as `deletion`, except `baseline` (None: the uniform noise; a number or
    tensor: used instead) and `generator`. Samek et al. flip 9x9 regions: pass a pooled and
    upsampled map (torch.nn.functional.avg_pool2d then interpolate) to flip regions.

    Returns a Tensor (B,) (one value for a per-example model).

    Samek, Binder, Montavon, Lapuschkin, Müller, "Evaluating the visualization of what a Deep
    Neural Network has learned" (2017), https://arxiv.org/abs/1509.06321
    """
    check_generator(generator, "pixel_flipping")

    def uniform(x: Tensor) -> Tensor:
        flat = x.detach().flatten(1)
        low = flat.amin(1).view(-1, *([1] * (x.ndim - 1)))
        high = flat.amax(1).view(-1, *([1] * (x.ndim - 1)))
        u = torch.rand(x.shape, generator=generator, dtype=x.dtype, device=x.device)
        return low + u * (high - low)

    def fill(call: Call) -> Fill:
        return replace_with(references(call, baseline, "pixel_flipping", uniform))

    return curve_metric("pixel_flipping", f, params, x, attribution, target, steps, batch_size,
                        output, fill, model_args=model_args, model_kwargs=model_kwargs)
