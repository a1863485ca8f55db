"""Guided Integrated Gradients (Kapishnikov et al. 2021)."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor

from fattr.core.baselines import BaselineSpec, baselines_for
from fattr.core.call import Call, attribution
from fattr.core.gradients import gradient_with_aux, plain_autograd_suffices
from fattr.core.inputs import flatten_inputs, split_flat
from fattr.core.model import ModelFn, Params, as_model
from fattr.errors import FattrError

TOLERANCE = 1e-9  # PAIR's EPSILON for "the L1 target is reached"


def _summed(scores: Tensor) -> tuple[Tensor, Tensor]:
    return scores.sum(), scores


def _reached(l1_current: Tensor, l1_target: Tensor) -> Tensor:
    """PAIR's `math.isclose(l1_target, l1_current, rel_tol=1e-9, abs_tol=1e-9)`, per example."""
    scale = torch.maximum(l1_target.abs(), l1_current.abs()).clamp(min=1.0)
    return (l1_current - l1_target).abs() <= TOLERANCE * scale


def selections(keys: Tensor, movable: Tensor, k: int, blocks: int) -> tuple[Tensor, Tensor]:
    """PAIR's successive selections, as key thresholds and the movable L1 they reach, (B,
    blocks + 2) each, padded with "none" (-inf, 0) in front and a repeat of "all" at the end.

    PAIR's inner iteration selects the still-movable features whose key (|g|; inf once a
    feature reached the window's edge) is <= the (k+1)-th smallest key, and moves them to the
    edge (their key becomes inf). Selection i is therefore {keys <= t_i} minus the earlier ones,
    with t_i the (k+1)-th smallest key above t_{i-1}: one `kthvalue` each. `blocks` =
    ceil(D / (k+1)) selections take every feature, so the last one is "all the rest" (t = inf)
    and needs none. `movable` is the L1 each feature can move (0 for those at the edge).
    """
    rest = keys
    none = keys.new_full((keys.shape[0],), -torch.inf)
    thresholds, reached = [none], [torch.zeros_like(none)]
    for _ in range(blocks - 1):
        t = rest.kthvalue(k + 1, 1).values
        taken = keys <= t[:, None]
        thresholds.append(t)
        reached.append(movable.where(taken, 0.0).sum(1))
        rest = keys.masked_fill(taken, torch.inf)
    thresholds += [torch.full_like(none, torch.inf)] * 2
    reached += [movable.sum(1)] * 2
    return torch.stack(thresholds, 1), torch.stack(reached, 1)


def select_and_move(x: Tensor, x_max: Tensor, x_input: Tensor, ranked: Tensor,
                    l1_target: Tensor, k: int, blocks: int) -> Tensor:
    """One Guided IG step's inner loop in closed form, for every example at once.

    PAIR moves selection after selection (`selections`) fully to `x_max` while the L1 distance
    to the input stays above `l1_target`, then the next selection partially to hit it. The
    movable L1 each selection reaches counts the full moves; then the full moves, PAIR's stopping
    test and the partial move, as PAIR computes them. Fused tensor ops over (B, D): no
    per-example work, no host sync, no sort. Features at the edge may join a move: they stay.
    """
    movable = (x - x_max).abs()
    keys = ranked.masked_fill(movable == 0, torch.inf)
    thresholds, reached = selections(keys, movable, k, blocks)
    l1_current = (x - x_input).abs().sum(1)
    done = _reached(l1_current, l1_target)  # PAIR's first test: this step moves nothing
    full = (reached < (l1_current - l1_target)[:, None]).sum(1, keepdim=True) - 1
    full = full.clamp(max=blocks).masked_fill(done[:, None], 0)  # selections moved entirely
    lower, upper = thresholds.gather(1, full), thresholds.gather(1, full + 1)
    whole = keys <= lower
    part = (keys <= upper) & (keys > lower)
    x_full = torch.where(whole, x_max, x)
    l1_after = (x_full - x_input).abs().sum(1)
    l1_part = (x_full - x_max).abs().where(part, 0.0).sum(1)
    gamma = torch.where(l1_part > 0, (l1_after - l1_target) / l1_part, torch.inf)
    gamma = gamma.masked_fill(done | _reached(l1_after, l1_target), 0.0)[:, None]
    partial = torch.where(gamma > 1, x_max, x_full + (x_max - x_full) * gamma.clamp(max=1.0))
    return torch.where(part, partial, x_full)


def guided_integrated_gradients(f: ModelFn, steps: int = 200, fraction: float = 0.25,
                                max_dist: float = 0.02, *,
                                output: Callable[[Any], Tensor] | None = None,
                                ) -> Callable[..., Tensor]:
    """Integrated gradients along an adaptive path that moves low-gradient features first.

    At step k (alpha = (k+1)/steps) the gradient g is taken at the current point; features
    lagging behind the window [alpha - max_dist, alpha + max_dist] of the straight line snap to
    its lower edge; then the `fraction` of still-movable features with the smallest |g| moves to
    the window's upper edge, repeatedly, until the L1 distance to the input has shrunk to
    (1 - alpha) of the total (the last group moves partially to hit it exactly). The
    attribution accumulates (x_new - x_old) * g. `max_dist=0` or `fraction=1` gives IG on the
    right Riemann rule; `max_dist=1` is the unbounded variant.

    Vectorised across examples: PAIR's data-dependent inner loop runs in closed form (its
    selections are runs of the |g| order, found by ceil(1/fraction) `kthvalue`s at most, see
    `select_and_move`), a few fused tensor ops over the whole batch per step, with no per-example
    work and no host sync. Steps are sequential by nature: one forward and backward per step
    for the whole batch. Computed in x's dtype (PAIR uses float64; pass float64 inputs for
    PAIR's numbers, equal to 1e-9).

    Args:
        f: model function.
        steps: path steps (PAIR default 200).
        fraction: features moved per inner iteration (default 0.25).
        max_dist: allowed L1 deviation from the straight line in units of alpha (default 0.02).
        output: picks a tensor from the model's output.

    Returns `attr(params, x, target=None, baseline=None)` shaped like x.

    Kapishnikov, Venugopalan, Avci, Wedin, Terry, Bolukbasi, "Guided Integrated Gradients:
    an Adaptive Path Method for Removing Noise" (2021), https://arxiv.org/abs/2106.09788
    """
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
        raise FattrError(f"guided_integrated_gradients: steps must be a positive int, got "
                         f"{steps!r}.")
    if not 0 < fraction <= 1 or not 0 <= max_dist <= 1:
        raise FattrError("guided_integrated_gradients: need 0 < fraction <= 1 and "
                         f"0 <= max_dist <= 1, got fraction={fraction!r}, max_dist={max_dist!r}.")
    model = as_model(f, output, "guided_integrated_gradients")

    def compute(params: Params, call: Call, baseline: BaselineSpec = None) -> Tensor:
        xs = call.inputs  # several inputs are one feature vector: their flattened concatenation
        x_input = flatten_inputs(xs)
        x_base = flatten_inputs(baselines_for(baseline, xs, "guided_integrated_gradients"))
        diff = x_input - x_base
        safe_diff = diff.masked_fill(diff == 0, 1.0)
        l1_total = diff.abs().sum(1)
        features = x_input.shape[1]
        k = int(fraction * (features - 1))  # numpy's quantile(method="lower") index
        blocks = math.ceil(features / (k + 1))  # selections that take every feature
        gradient = gradient_with_aux(  # the same for every step: decided once
            lambda v: _summed(call.score(model, params, v)), 0,
            plain_autograd_suffices(model, params, call))
        x = x_base
        attr = torch.zeros_like(x_input)
        for step in range(steps):
            g = flatten_inputs(gradient(split_flat(x, xs))[0])
            alpha = (step + 1) / steps
            alpha_min, alpha_max = max(alpha - max_dist, 0.0), min(alpha + max_dist, 1.0)
            x_start = x
            lagging = (x - x_base) / safe_diff < alpha_min  # diff == 0: x stays x_base
            x = torch.where(lagging, x_base + diff * alpha_min, x)
            x = select_and_move(x, x_base + diff * alpha_max, x_input, g.abs(),
                                l1_total * (1 - alpha), k, blocks)
            attr = attr + (x - x_start) * g
        return call.unpack(split_flat(attr, xs))

    return attribution(model, compute, batched_kwargs=("baseline",),
                       doc=guided_integrated_gradients.__doc__)
