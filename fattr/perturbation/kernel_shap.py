"""KernelSHAP (Lundberg and Lee 2017): Shapley values as a kernel-weighted linear regression."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor

from fattr.core.checks import check_count
from fattr.core.model import ModelFn
from fattr.perturbation.engine import Game, feature_method
from fattr.perturbation.solvers import least_squares


def shapley_kernel_coalitions(samples: int, count: int, generator: torch.Generator | None,
                              device: torch.device) -> Tensor:
    """`samples` random coalitions (samples, count) bool with P(z) proportional to the Shapley
    kernel (count - 1) / (C(count, |z|) |z| (count - |z|)), sizes 1..count-1: a size k is drawn
    with probability proportional to (count - 1) / (k (count - k)), then a uniform subset of
    that size (captum's sampling)."""
    if count < 2:
        return torch.zeros((0, count), dtype=torch.bool, device=device)
    size = torch.arange(1, count, device=device, dtype=torch.float64)
    sizes = torch.multinomial(1 / (size * (count - size)), samples, replacement=True,
                              generator=generator) + 1
    keys = torch.rand((samples, count), generator=generator, device=device)
    return keys.argsort(1).argsort(1) < sizes[:, None]


def kernel_shap(f: ModelFn, samples: int = 50, batch_size: int | None = None, *,
                output: Callable[[Any], Tensor] | None = None) -> Callable[..., Tensor]:
    """Shapley values of the feature groups by KernelSHAP's weighted linear regression.

        phi = argmin sum_z pi(z) (v(z) - v(0) - z . phi)^2   subject to   sum(phi) = v(1) - v(0)

    with v(z) = f(x where z keeps a feature, baseline elsewhere) and the Shapley kernel
    pi(z) = (F - 1) / (C(F, |z|) |z| (F - |z|)). The coalitions are drawn with probability
    pi(z) (`shapley_kernel_coalitions`), so every draw has weight 1. The constraint is exact:
    one feature is eliminated (as the shap package does), so efficiency,
    sum(phi) = f(x) - f(baseline), holds to float rounding for any number of samples, and a
    model that is linear in the features gets exactly w * (x - baseline). As samples grow the
    result converges to the exact Shapley values. The least squares is solved with torch
    (pseudo-inverse, batched over examples): with fewer samples than F - 1 the minimum-norm
    solution is returned.

    Differs from captum's KernelShap: captum adds the empty and full coalitions with weight
    1e6 to an unconstrained regression with intercept (so efficiency holds approximately),
    counts them in n_samples, and fits with sklearn in float32. fattr evaluates them on top of
    `samples` and keeps x's dtype.

    Args:
        f: model function `f(params, x)`.
        samples: random coalitions per example (default 50), plus the two fixed ones.
        batch_size: the most model inputs per forward call, mixed across examples and
            coalitions; None (default) picks a chunk from the input size
            (`fattr.core.chunking.default_batch_size`). The result does not depend on it.
        output: picks a tensor from the model's output.

    Returns `attr(params, x, target=None, *, baseline=None, feature_mask=None,
    generator=None) -> Tensor` shaped like x; every element gets its group's value
    (feature_mask as in `feature_ablation`). Coalitions are drawn once from `generator` and
    shared by the examples of the batch. Under `torch.func.vmap` over targets pass
    `randomness="same"`; vmap's default `randomness="error"` raises. Differentiable in params.

    >>> attr = fattr.kernel_shap(f, samples=200)
    >>> g = torch.Generator().manual_seed(0)
    >>> a = attr(params, x, labels, feature_mask=segments, generator=g)

    Lundberg and Lee, "A Unified Approach to Interpreting Model Predictions" (2017),
    https://arxiv.org/abs/1705.07874
    """
    check_count(samples, "samples", "kernel_shap")

    def solve(game: Game, generator: torch.Generator | None) -> Tensor:
        count, device = game.features.count, game.device
        drawn = shapley_kernel_coalitions(samples, count, generator, device)
        nothing = torch.zeros((1, count), dtype=torch.bool, device=device)
        scores = game.coalitions(torch.cat([nothing, drawn]))
        empty, values = scores[0], scores[1:]
        gain = game.full() - empty
        if count == 1:
            return gain[:, None]
        z = drawn.to(values.dtype)  # eliminate the last feature: phi_F = gain - sum(phi_<F)
        free = least_squares(z[:, :-1] - z[:, -1:], values - empty - z[:, -1:] * gain)
        return torch.cat([free, (gain - free.sum(1))[:, None]], 1)

    return feature_method(f, "kernel_shap", solve, batch_size, output, kernel_shap.__doc__,
                          per_call=("baseline", "feature_mask", "generator"))
