"""Integrated gradients with per-example step allocation: each example gets as many path steps
as its completeness gap needs."""

from __future__ import annotations

import math
import numbers
from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor

from fattr.core.baselines import BaselineSpec, baselines_for
from fattr.core.call import Call, attribution
from fattr.core.checks import any_over_transforms
from fattr.core.chunking import check_batch_size, chunked
from fattr.core.gradients import input_gradient, scaled
from fattr.core.inputs import Inputs, tmap
from fattr.core.model import ModelFn, Params, as_model
from fattr.core.paths import line_points
from fattr.errors import FattrError

NAME = "adaptive_integrated_gradients"


def _check(tolerance: float, min_steps: int, max_steps: int) -> None:
    if isinstance(tolerance, bool) or not isinstance(tolerance, numbers.Real) or \
            not math.isfinite(tolerance) or tolerance <= 0:
        raise FattrError(f"{NAME}: tolerance must be a positive number (the completeness gap "
                         f"allowed, relative to |f(x) - f(baseline)|), got {tolerance!r}.")
    for what, value in (("min_steps", min_steps), ("max_steps", max_steps)):
        if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
            raise FattrError(f"{NAME}: {what} must be a positive int, got {value!r}.")
    if max_steps < min_steps:
        raise FattrError(f"{NAME}: max_steps ({max_steps}) must be at least min_steps "
                         f"({min_steps}).")


def _sum_of_inputs(values: Inputs) -> Tensor:
    return sum(v.flatten(1).sum(1) for v in values)


def adaptive_integrated_gradients(f: ModelFn, tolerance: float = 1e-3, min_steps: int = 8,
                                  max_steps: int = 512, batch_size: int | None = None, *,
                                  output: Callable[[Any], Tensor] | None = None,
                                  ) -> Callable[..., Tensor]:
    """Integrated gradients, each example refined until its completeness gap is small.

    The trapezoid rule on nested grids: every example starts with `min_steps` intervals
    (min_steps + 1 gradients, the path's two ends included); while an example's gap
    |f(x) - f(x') - sum(attribution)| exceeds `tolerance * |f(x) - f(x')|`, its step count
    doubles, and only the new midpoints are evaluated (the sums of the coarser grid are kept).
    Examples that are done drop out; the others' new points go through the model together, in
    chunks of `batch_size` rows. An example stops at `max_steps` intervals at the latest (the
    next power-of-two multiple of `min_steps` at or above it).

    This is what a user of captum does by hand (raise `n_steps` until the convergence delta is
    small), per example and without recomputing the points already taken. It is not cheaper
    than a fixed rule for the same accuracy on ReLU networks, whose path gradient is piecewise
    constant (every rule's error falls as 1/steps; see docs/performance.md); it spends the
    steps where the gap says they are needed.

    Args:
        f: model function.
        tolerance: the completeness gap allowed, relative to |f(x) - f(x')| (default 1e-3). A
            gap within 16 rounding units of |f(x)| + |f(x')| always passes (an example at its
            baseline is done at once).
        min_steps: intervals every example starts with (default 8).
        max_steps: the most intervals an example gets (default 512).
        batch_size: the most path points per forward call (None: all new points of a round).
        output: picks a tensor from the model's output.

    Returns `attr(params, x, target=None, baseline=None, *, model_args=(), model_kwargs=None)`
    shaped like x (a tuple for a tuple x). Which examples a round evaluates is read on the host
    from the gaps, so the function runs eagerly inside a compiled caller. Under
    `torch.func.vmap` over targets (or anything else but the examples) a round evaluates the
    examples any vmapped call still refines, and each call masks the rest: the same numbers as
    separate calls. It is differentiable in x and the params (the rounds stay fixed). vmap over
    the examples themselves (`fattr.per_example`) is not supported: run it batched.

    >>> attr = fattr.adaptive_integrated_gradients(f, tolerance=1e-3)
    >>> a = attr(params, x, target=labels)

    Sundararajan, Taly, Yan, "Axiomatic Attribution for Deep Networks" (2017),
    https://arxiv.org/abs/1703.01365 (section 4: check completeness, add steps until it holds).
    """
    _check(tolerance, min_steps, max_steps)
    check_batch_size(batch_size, NAME)
    model = as_model(f, output, NAME)

    def compute(params: Params, call: Call, baseline: BaselineSpec = None) -> Tensor:
        xs = call.inputs
        starts = baselines_for(baseline, xs, NAME)
        batch, device = call.batch, xs[0].device

        def gradients_at(alphas: Tensor, example: Tensor, weights: Tensor,
                         ends: Tensor) -> tuple[Tensor, ...]:
            """Per row: weight * gradient, the score signed by `ends` (+1 at x, -1 at x') and
            its magnitude at the ends (the rounding scale of their difference)."""
            points = line_points(starts, xs, alphas, example)
            gradients, score = input_gradient(model, params, points, call, example)
            return (*scaled(gradients, weights), score * ends, score.abs() * ends.abs())

        def round_sums(alphas: Tensor, example: Tensor, weights: Tensor,
                       ends: Tensor) -> tuple[Tensor, ...]:
            return chunked(gradients_at, alphas, example, weights, ends, batch_size=batch_size,
                           segments=(example, batch))

        # Round 0: every example, min_steps + 1 points, trapezoid weights (ends halved).
        n0 = min_steps
        grid = torch.arange(n0 + 1, device=device)
        alphas = (grid / n0).to(xs[0].dtype).repeat_interleave(batch)
        example = torch.arange(batch, device=device).repeat(n0 + 1)
        on_end = ((grid == 0) | (grid == n0)).repeat_interleave(batch)
        weights = torch.where(on_end, 0.5, 1.0).to(xs[0].dtype)
        ends = torch.where(grid == n0, 1.0, torch.where(grid == 0, -1.0, 0.0))
        ends = ends.to(xs[0].dtype).repeat_interleave(batch)
        *sums, difference, magnitude = round_sums(alphas, example, weights, ends)
        # A gap at rounding level is met whatever the tolerance (an example at its baseline).
        rounding = 16 * torch.finfo(xs[0].dtype).eps * magnitude.detach()
        intervals = torch.full((batch,), n0, device=device, dtype=xs[0].dtype)

        def attribution_of(sums: list[Tensor]) -> Inputs:
            return tmap(lambda x, s, g: (x - s) * g / intervals.reshape(-1, *[1] * (x.ndim - 1)),
                        xs, starts, tuple(sums))

        n = n0
        while True:
            result = attribution_of(sums)
            if n >= max_steps:
                break
            gap = (difference - _sum_of_inputs(result)).detach().abs()
            refine = gap > tolerance * difference.detach().abs() + rounding
            # The examples to refine for any target of a surrounding vmap; `refine` itself
            # masks the others' rows, so each vmapped call gets its own numbers.
            active = any_over_transforms(refine).nonzero().flatten()
            if active.numel() == 0:
                break
            # The next round: the midpoints of the current grid, for the active examples.
            mid = (2 * torch.arange(n, device=device) + 1).to(xs[0].dtype) / (2 * n)
            alphas = mid.repeat_interleave(active.numel())
            example = active.repeat(n)
            weights = refine.to(alphas.dtype)[example]
            *new, _, _ = round_sums(alphas, example, weights, torch.zeros_like(alphas))
            sums = [s + m for s, m in zip(sums, new)]
            intervals = torch.where(refine, 2.0 * n, intervals)
            n *= 2
        return call.unpack(result)

    return attribution(model, compute, batched_kwargs=("baseline",),
                       doc=adaptive_integrated_gradients.__doc__, compilable=False)
