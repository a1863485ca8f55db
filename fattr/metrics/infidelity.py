"""Infidelity (Yeh et al. 2019): how well attribution . perturbation predicts the output change."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor

from fattr.core.checks import check_count
from fattr.core.chunking import check_batch_size
from fattr.core.model import ModelFn, Params, as_model
from fattr.core.noise import relative_noise
from fattr.core.targets import TargetSpec
from fattr.errors import FattrError
from fattr.metrics.base import (
    check_finite,
    check_like,
    prepare,
    safe_divide,
    stacked_scores,
)


def infidelity(f: ModelFn, params: Params, x: Tensor, attribution: Tensor,
               target: TargetSpec = None, perturbations: Tensor | None = None,
               samples: int = 10, generator: torch.Generator | None = None, *,
               stdev: float = 0.1, normalize: bool = False, batch_size: int | None = None,
               output: Callable[[Any], Tensor] | None = None) -> Tensor:
    """Expected squared error between `I . attribution` and the output drop `f(x) - f(x - I)`.

        INFD(a, x) = E_I [ (sum(I * a) - (f(x)_t - f(x - I)_t))^2 ]

    estimated as the mean over S perturbations. With `normalize=True` the attribution is first
    rescaled by the least-squares factor beta = E[(I.a) d] / E[(I.a)^2] (d the output drop),
    which makes the score invariant to the attribution's scale (Yeh et al.'s own code).

    Args:
        f, params, x: the model function, its parameters and the inputs (B, ...).
        attribution: shaped like x.
        target: as for every method (int, per-example indices, callable...).
        perturbations: I of shape (S, B, ...), used as given (x~ = x - I). If None, S = `samples`
            draws I ~ N(0, (stdev * (max(x_b) - min(x_b)))^2) per example from `generator`.
        samples: perturbations per example when they are drawn (default 10, as captum).
        stdev: noise level of the drawn perturbations, relative to each example's value range
            (default 0.1; fattr's choice, captum has no default perturbation).
        normalize: rescale the attribution optimally first (captum's `normalize`, default False
            as in captum).
        batch_size: the most model inputs per forward call; the result does not depend on it.
        output: picks a tensor from the model's output.

    Returns a Tensor (B,) (lower is better); one value for a per-example model. Differentiable
    in params, x and attribution.

    >>> a = fattr.saliency(f, abs=False)(params, x, labels)
    >>> g = torch.Generator().manual_seed(0)
    >>> fattr.metrics.infidelity(f, params, x, a, labels, generator=g)

    captum: `captum.metrics.infidelity(model, lambda x: (I, x - I), x, a, target=t,
    normalize=...)` with the same perturbations gives the same values (captum returns them with
    the sample axis innermost, fattr takes (S, B, ...)).

    Yeh, Hsieh, Suggala, Inouye, Ravikumar, "On the (In)fidelity and Sensitivity of
    Explanations" (2019), https://arxiv.org/abs/1901.09392
    """
    method = "infidelity"
    model = as_model(f, output, method)
    check_batch_size(batch_size, method)
    batch = prepare(model, x, target)
    attribution = batch.batched(check_like(attribution, x, method, batched=not batch.single))
    x = batch.x
    if batch.size == 0:
        return x.new_zeros(0)
    if perturbations is None:
        check_count(samples, "samples", method)
        if not stdev >= 0:
            raise FattrError(f"{method}: stdev must be >= 0 (relative to each example's value "
                             f"range), got {stdev!r}.")
        perturbations = relative_noise(x, samples, stdev, generator)
    else:
        perturbations = _check_perturbations(perturbations, x, batch.single, method)
    points = torch.cat([x.unsqueeze(0), x - perturbations])
    scores = stacked_scores(model, params, points, batch.target, batch_size)
    drop = scores[:1] - scores[1:]  # (S, B)
    dot = (perturbations * attribution).flatten(2).sum(2)
    if normalize:
        beta = safe_divide((dot * drop).sum(0), dot.square().sum(0))
        dot = beta * dot
    return batch.result((dot - drop).square().mean(0))


def _check_perturbations(perturbations: object, x: Tensor, single: bool, method: str) -> Tensor:
    """Perturbations (S, B, ...) (or (S, ...) for one example), as floats on x's device."""
    if isinstance(perturbations, Tensor) and single:
        perturbations = perturbations.unsqueeze(1)
    if not isinstance(perturbations, Tensor) or perturbations.ndim != x.ndim + 1 or \
            perturbations.shape[1:] != x.shape or perturbations.shape[0] == 0:
        got = (tuple(perturbations.shape) if isinstance(perturbations, Tensor)
               else type(perturbations).__name__)
        shape = x.shape[1:] if single else x.shape
        raise FattrError(f"{method}: perturbations must have shape (S, *{tuple(shape)}), S >= 1 "
                         f"perturbations of x, got {got}.")
    return check_finite(perturbations.to(dtype=x.dtype, device=x.device), method,
                        "perturbations")
