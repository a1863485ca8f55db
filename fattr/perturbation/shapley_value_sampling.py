"""Shapley value sampling (Castro et al. 2009): marginal contributions along random orderings."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor

from fattr.core.checks import check_count
from fattr.core.model import ModelFn
from fattr.perturbation.engine import (
    Game,
    feature_method,
    prefixes,
    random_permutations,
)
from fattr.perturbation.solvers import permutation_marginals


def prefix_plan(samples: int, count: int, device: torch.device) -> Tensor:
    """(permutation, length) rows: the empty and the full coalition once, then the prefixes of
    length 1..count-1 of every permutation, (2 + samples * (count - 1), 2)."""
    sample = torch.arange(samples, device=device).repeat_interleave(count - 1)
    length = torch.arange(1, count, device=device).repeat(samples)
    ends = torch.tensor([[0, 0], [0, count]], device=device)
    return torch.cat([ends, torch.stack([sample, length], 1)])


def shapley_value_sampling(f: ModelFn, samples: int = 25, batch_size: int | None = None, *,
                           output: Callable[[Any], Tensor] | None = None,
                           ) -> Callable[..., Tensor]:
    """Shapley values estimated from `samples` random orderings of the feature groups.

        phi_i ~ (1 / S) * sum_s (v(pre_s(i) + i) - v(pre_s(i)))

    where pre_s(i) are the features before i in ordering s and v(S) = f(x_S, baseline_rest).
    Each ordering's marginal contributions telescope, so efficiency holds exactly for any S:
    the values of the F features sum to f(x) - f(baseline). Per example this costs
    S * (F - 1) + 2 evaluations (the empty and full coalitions are shared by all orderings;
    captum evaluates S * F + 1).

    Args:
        f: model function `f(params, x)`.
        samples: number of random orderings (default 25, as captum's n_samples).
        batch_size: the most model inputs per forward call, mixed across examples, orderings
            and prefixes; None (default) picks a chunk from the input size
            (`fattr.core.chunking.default_batch_size`). The result does not depend on it.
        output: picks a tensor from the model's output.

    Returns `attr(params, x, target=None, *, baseline=None, feature_mask=None,
    generator=None) -> Tensor` shaped like x (feature_mask as in `feature_ablation`). The
    orderings (samples, F) are drawn once, up front, from `generator` with
    `random_permutations`, and shared by every example of the batch (as captum), so a batched
    call equals a vmap over `per_example` with `randomness="same"`. Under `torch.func.vmap`
    over targets pass `randomness="same"`; vmap's default `randomness="error"` raises.
    Differentiable in params.

    >>> attr = fattr.shapley_value_sampling(f, samples=50)
    >>> g = torch.Generator().manual_seed(0)
    >>> a = attr(params, x, labels, feature_mask=segments, generator=g)

    Castro, Gomez, Tejada, "Polynomial calculation of the Shapley value based on sampling"
    (2009), https://doi.org/10.1016/j.cor.2008.04.004 (captum's ShapleyValueSampling).
    """
    check_count(samples, "samples", "shapley_value_sampling")

    def solve(game: Game, generator: torch.Generator | None) -> Tensor:
        count, device = game.features.count, game.device
        orders = random_permutations(samples, count, generator, device)
        rank = orders.argsort(1)  # position of every feature in every ordering
        scores = game.scores(prefix_plan(samples, count, device), prefixes(game.features, rank))
        empty, full, inner = scores[0], scores[1], scores[2:].reshape(samples, count - 1, -1)
        values = torch.cat([empty.expand(samples, 1, -1), inner, full.expand(samples, 1, -1)], 1)
        return permutation_marginals(values, orders)

    return feature_method(f, "shapley_value_sampling", solve, batch_size, output,
                          shapley_value_sampling.__doc__,
                          per_call=("baseline", "feature_mask", "generator"))
