"""Deletion, insertion and pixel flipping: remove features in order of relevance, watch the score.

One engine: rank the features of each example by attribution, build the input of every
(step, example) pair inside the chunk that evaluates it (so S copies of x are never held at
once), record the target score, and integrate the curve over the fraction removed. The named
metrics only differ in what a removed feature becomes.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any, Union

import torch
from torch import Tensor

from fattr.core.baselines import BaselineSpec, baseline_like
from fattr.core.blur import blur_stack
from fattr.core.checks import check_count
from fattr.core.chunking import check_batch_size, chunked
from fattr.core.model import Model, ModelFn, Params, as_model
from fattr.core.targets import TargetSpec
from fattr.errors import FattrError
from fattr.metrics.base import (
    Batch,
    check_like,
    prepare,
    ranks,
    removal_counts,
    trapezoid,
)

# fill(x_rows, removed_rows, example_of_each_row) -> the model inputs
Fill = Callable[[Tensor, Tensor, Tensor], Tensor]
Output = Union[Callable[[Any], Tensor], None]


def removal_curve(model: Model, params: Params, batch: Batch, order: Tensor, steps: int,
                  fill: Fill, batch_size: int | None) -> Tensor:
    """Target scores (steps + 1, B) after removing floor(i * n / steps) features, i = 0..steps,
    in the order of `order` (B, ...) (rank 0 first); `order` broadcasts over x."""
    x = batch.x
    counts = removal_counts(math.prod(order.shape[1:]), steps, x.device)
    step = torch.arange(steps + 1, device=x.device).repeat_interleave(batch.size)
    example = torch.arange(batch.size, device=x.device).repeat(steps + 1)
    unit = (1,) * (order.ndim - 1)

    def chunk(step: Tensor, example: Tensor) -> Tensor:
        removed = (order[example] < counts[step].view(-1, *unit)).expand(-1, *x.shape[1:])
        inputs = fill(x[example], removed, example)
        return batch.target.select(model(params, inputs), example)

    scores = chunked(chunk, step, example, batch_size=batch_size)
    return scores.reshape(steps + 1, batch.size)


def replace_with(value: Tensor) -> Fill:
    """Removed features take the values of `value` (B, ...) of their example."""
    return lambda rows, removed, example: torch.where(removed, value[example], rows)


def curve_metric(method: str, f: ModelFn, params: Params, x: Tensor, attribution: Tensor,
                 target: TargetSpec, steps: int, batch_size: int | None, output: Output,
                 fill: Callable[[Batch], Fill], descending: bool = True) -> Tensor:
    """The shared boundary of the curve metrics: validate, rank, evaluate, integrate."""
    model = as_model(f, output, method)
    check_count(steps, "steps", method)
    check_batch_size(batch_size, method)
    batch = prepare(model, x, target)
    attribution = check_like(attribution, x, method, broadcast=True, batched=not batch.single)
    if batch.size == 0:
        return batch.x.new_zeros(0)
    order = ranks(batch.batched(attribution), descending=descending)
    curve = removal_curve(model, params, batch, order, steps, fill(batch), batch_size)
    return batch.result(trapezoid(curve))


def deletion(f: ModelFn, params: Params, x: Tensor, attribution: Tensor,
             target: TargetSpec = None, steps: int = 20, baseline: BaselineSpec = None, *,
             batch_size: int | None = None, output: Output = None) -> Tensor:
    """Area under the deletion curve: the target score as the most relevant features are removed.

        DEL(x) = integral_0^1 f(x with the top-q fraction of features set to the baseline)_t dq

    estimated by the trapezoid rule at q = 0, 1/steps, ..., 1 (floor(q n) of the n features
    removed). Lower is better: a faithful attribution destroys the score quickly.

    Args:
        f, params, x, target: the model function, its parameters, inputs (B, ...), target.
        attribution: shaped like x, or with size-1 axes that broadcast over x: a feature is one
            element of the attribution, so a (B, 1, H, W) map removes whole pixels (all channels)
            and a (B, C, H, W) map single channel values. Features are ranked by value (largest
            first; pass `attribution.abs()` to rank by magnitude); ties keep their order.
        steps: curve points minus one (default 20: 5% of the features per step).
        baseline: what removed features become: None (zeros, RISE's black image), a number,
            or a tensor broadcastable to x.
        batch_size: the most model inputs per forward call ((steps + 1) * B in all).
        output: picks a tensor from the model's output. The curve records the selected target
            score as the model returns it; RISE records class probabilities: pass
            `output=lambda out: out.softmax(-1)` for that.

    Returns a Tensor (B,) (one value for a per-example model), differentiable in params and x.

    >>> a = fattr.integrated_gradients(f)(params, x, labels)
    >>> fattr.metrics.deletion(f, params, x, a.sum(1, keepdim=True), labels)

    Petsiuk, Das, Saenko, "RISE: Randomized Input Sampling for Explanation of Black-box
    Models" (2018), https://arxiv.org/abs/1806.07421
    """

    def fill(batch: Batch) -> Fill:
        return replace_with(baseline_like(baseline, batch.x, "deletion"))

    return curve_metric("deletion", f, params, x, attribution, target, steps, batch_size,
                        output, fill)


def insertion(f: ModelFn, params: Params, x: Tensor, attribution: Tensor,
              target: TargetSpec = None, steps: int = 20, baseline: BaselineSpec = None, *,
              sigma: float = 5.0, batch_size: int | None = None, output: Output = None,
              ) -> Tensor:
    """Area under the insertion curve: the score as the most relevant features are put back
    into a baseline image.

        INS(x) = integral_0^1 f(baseline with the top-q fraction of features of x)_t dq

    Higher is better. Same arguments as `deletion`, except:

    Args:
        baseline: the starting image: None gives x blurred with a Gaussian of `sigma` pixels
            (RISE's choice) for image batches (B, C, H, W) and zeros for other inputs; a number
            or a tensor broadcastable to x is used as given.
        sigma: blur of the default baseline, in pixels (default 5.0, RISE's value; truncated at
            4 sigma with zero padding, as `scipy.ndimage.gaussian_filter(mode="constant")`).

    Returns a Tensor (B,) (one value for a per-example model).

    Petsiuk, Das, Saenko, "RISE: Randomized Input Sampling for Explanation of Black-box
    Models" (2018), https://arxiv.org/abs/1806.07421
    """
    if not sigma > 0:
        raise FattrError(f"insertion: sigma must be > 0 (pixels), got {sigma!r}.")

    def fill(batch: Batch) -> Fill:
        x = batch.x
        if baseline is None and x.ndim == 4:
            start = blur_stack(x, torch.tensor([float(sigma)], dtype=x.dtype, device=x.device))[0]
        else:
            start = baseline_like(baseline, x, "insertion")
        return lambda rows, inserted, example: torch.where(inserted, rows, start[example])

    return curve_metric("insertion", f, params, x, attribution, target, steps, batch_size,
                        output, fill)


def pixel_flipping(f: ModelFn, params: Params, x: Tensor, attribution: Tensor,
                   target: TargetSpec = None, steps: int = 20, baseline: BaselineSpec = None,
                   *, generator: torch.Generator | None = None, batch_size: int | None = None,
                   output: Output = None) -> Tensor:
    """Area under the pixel-flipping (MoRF) curve: features are flipped to random values in the
    order of relevance (Samek et al. 2017), most relevant first.

        PF(x) = integral_0^1 f(x with the top-q fraction of features replaced by noise)_t dq

    Removed features get values drawn once per example, uniform in [min(x_b), max(x_b)]
    (Samek et al.'s uniform replacement), from `generator`; one draw serves every step, so the
    curve changes only where features are flipped. Lower is better. Samek et al. report the
    AOPC, mean_k (f(x) - f(x^(k))); with the same points that is f(x) minus the mean of the
    curve, so the two rank attributions alike. Same arguments as `deletion`, except `baseline`
    (None: the uniform noise; a number or tensor: used instead) and `generator`. Samek et al.
    flip 9x9 regions: pass a pooled and upsampled map (torch.nn.functional.avg_pool2d then
    interpolate) to flip regions.

    Returns a Tensor (B,) (one value for a per-example model).

    Samek, Binder, Montavon, Lapuschkin, Müller, "Evaluating the visualization of what a Deep
    Neural Network has learned" (2017), https://arxiv.org/abs/1509.06321
    """

    def fill(batch: Batch) -> Fill:
        x = batch.x
        if baseline is None:
            flat = x.detach().flatten(1)
            low = flat.amin(1).view(-1, *([1] * (x.ndim - 1)))
            high = flat.amax(1).view(-1, *([1] * (x.ndim - 1)))
            u = torch.rand(x.shape, generator=generator, dtype=x.dtype, device=x.device)
            value = low + u * (high - low)
        else:
            value = baseline_like(baseline, x, "pixel_flipping")
        return replace_with(value)

    return curve_metric("pixel_flipping", f, params, x, attribution, target, steps, batch_size,
                        output, fill)
