"""Exact Shapley values (Shapley 1953) of feature groups, from all 2^F coalitions."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor

from fattr.core.checks import check_count
from fattr.core.model import ModelFn
from fattr.errors import FattrError
from fattr.perturbation.engine import Game, feature_method
from fattr.perturbation.solvers import shapley_weights


def all_coalitions(count: int, device: torch.device) -> Tensor:
    """Every subset of `count` features as a (2^count, count) bool matrix (bit i: feature i)."""
    codes = torch.arange(2**count, device=device)
    return ((codes[:, None] >> torch.arange(count, device=device)) & 1).bool()


def shapley_values(f: ModelFn, batch_size: int | None = None, *, max_features: int = 16,
                   output: Callable[[Any], Tensor] | None = None) -> Callable[..., Tensor]:
    """Exact Shapley values of the feature groups, for the game v(S) = f(x_S, baseline_rest).

        phi_i = sum_{S subset of N minus i} |S|! (F - |S| - 1)! / F! * (v(S + i) - v(S))

    Every one of the 2^F coalitions is evaluated once per example (captum's ShapleyValues walks
    all F! orderings instead: F! * F evaluations for the same numbers). Efficiency holds exactly:
    the values of the F features sum to f(x) - f(baseline).

    Args:
        f: model function `f(params, x)`.
        batch_size: the most model inputs per forward call, mixed across examples and
            coalitions; None (default) picks a chunk from the input size
            (`fattr.core.chunking.default_batch_size`). The result does not depend on it.
        max_features: the most features accepted (default 16, i.e. 65536 forward passes per
            example); more raise an error that suggests grouping or sampling.
        output: picks a tensor from the model's output.

    Returns `attr(params, x, target=None, *, baseline=None, feature_mask=None) -> Tensor`
    shaped like x: every element gets its group's Shapley value (as captum). `feature_mask` as
    in `feature_ablation`; without one every element is a feature, so x may have at most
    `max_features` elements per example. Forward-only (integer inputs allowed), differentiable
    in params, works under `torch.func.vmap` over targets.

    >>> quadrants = torch.tensor([[0, 1], [2, 3]]).repeat_interleave(16, 0).repeat_interleave(16, 1)
    >>> a = fattr.shapley_values(f)(params, x, labels, feature_mask=quadrants)

    Shapley, "A Value for n-Person Games" (1953); Lundberg and Lee, "A Unified Approach to
    Interpreting Model Predictions" (2017), https://arxiv.org/abs/1705.07874
    """
    check_count(max_features, "max_features", "shapley_values")

    def solve(game: Game, _: object) -> Tensor:
        count = game.features.count
        if count > max_features:
            raise FattrError(
                f"shapley_values: {count} features, but exact Shapley values are limited to "
                f"max_features={max_features} (they need 2^F forward passes per example, here "
                f"2^{count}). Group elements into fewer features with feature_mask (e.g. "
                "superpixels), use shapley_value_sampling or kernel_shap, or raise max_features.")
        keep = all_coalitions(count, game.device)
        values = game.coalitions(keep)
        return values.T @ shapley_weights(keep, values.dtype)

    return feature_method(f, "shapley_values", solve, batch_size, output,
                          shapley_values.__doc__)
