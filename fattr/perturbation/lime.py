"""LIME (Ribeiro et al. 2016): a locally weighted linear surrogate on random feature subsets."""

from __future__ import annotations

import numbers
from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor

from fattr.core.checks import check_count
from fattr.core.model import ModelFn
from fattr.errors import FattrError
from fattr.perturbation.engine import Game, feature_method
from fattr.perturbation.features import Features
from fattr.perturbation.solvers import least_squares

KERNEL_SPACES = ("interpretable", "input")


def bernoulli_coalitions(samples: int, count: int, generator: torch.Generator | None,
                         device: torch.device) -> Tensor:
    """`samples` random coalitions (samples, count) bool, each feature kept with probability
    1/2 (captum's default_perturb_func)."""
    return torch.rand((samples, count), generator=generator, device=device) < 0.5


def cosine_distance(keep: Tensor, x: Tensor, fill: Tensor, features: Features,
                    space: str) -> Tensor:
    """1 - cos between the unperturbed and every perturbed point: (S,) in the interpretable
    binary space, (S, B) in input space (computed from per-feature sums of the flat inputs x
    and fill (B, D), no copies of x)."""
    z = keep.to(x.dtype if x.is_floating_point() else torch.get_default_dtype())
    if space == "interpretable":  # cos(1, z) = sqrt(|z| / F)
        return 1 - (z.sum(1) / keep.shape[1]).sqrt()
    x, fill = x.to(z.dtype), fill.to(z.dtype)
    own, cross, other = (features.sums(t) for t in (x * x, x * fill, fill * fill))  # (B, F)
    dot = z @ own.T + (1 - z) @ cross.T
    norms = (own.sum(1).sqrt() * (z @ own.T + (1 - z) @ other.T).sqrt()).clamp_min(1e-8)
    return 1 - dot / norms


def lime(f: ModelFn, samples: int = 50, batch_size: int | None = None, *, alpha: float = 1.0,
         kernel_width: float = 1.0, kernel_space: str = "interpretable",
         output: Callable[[Any], Tensor] | None = None) -> Callable[..., Tensor]:
    """Coefficients of a weighted ridge regression of the target score on random coalitions.

        w(z) = exp(-d(z)^2 / (2 kernel_width^2)),   d(z) = 1 - cos(1, z)
        (b, phi) = argmin sum_z w(z) (v(z) - b - z . phi)^2 + alpha ||phi||^2

    with z ~ Bernoulli(1/2) per feature (`bernoulli_coalitions`) and v(z) = f(x where z keeps
    a feature, baseline elsewhere). The intercept b is not penalized. This is sklearn's
    `Ridge(alpha).fit(z, v, sample_weight=w)` (and the lime package's surrogate, Ridge with
    alpha=1), solved with torch (pseudo-inverse, batched over examples) in x's dtype.

    Differences from captum's Lime (defaults: exponential cosine kernel of width 1, Bernoulli
    samples, as here): captum fits `Lasso(alpha=0.01)` (an L1, sparse surrogate, fitted by
    sklearn in float32, not differentiable); fattr fits the L2 ridge above, which torch solves
    in closed form, differentiably. captum measures the cosine distance between the original
    and the perturbed INPUTS; fattr's default measures it in the interpretable binary space
    (cos(1, z) = sqrt(|z| / F)), as the original LIME does for images, so the weights do not
    depend on pixel values or on the baseline; `kernel_space="input"` gives captum's kernel.

    Args:
        f: model function `f(params, x)`.
        samples: random coalitions per example (default 50, as captum's Lime.attribute).
        batch_size: the most model inputs per forward call, mixed across examples and samples;
            None (default) picks a chunk from the input size (`fattr.core.chunking.
            default_batch_size`). The result does not depend on it.
        alpha: ridge penalty on the coefficients (default 1.0, in sklearn Ridge's scale: the
            weighted sum, not mean, of squared residuals); 0 is plain weighted least squares
            (with fewer samples than features: the minimum-norm coefficients, as sklearn's
            LinearRegression).
        kernel_width: width of the exponential kernel (default 1.0, as captum).
        kernel_space: "interpretable" (default) or "input" (captum's), see above.
        output: picks a tensor from the model's output.

    Returns `attr(params, x, target=None, *, baseline=None, feature_mask=None,
    generator=None) -> Tensor` shaped like x: every element gets its group's coefficient
    (feature_mask as in `feature_ablation`). Coalitions are drawn once from `generator` and
    shared by the examples of the batch. Under `torch.func.vmap` over targets pass
    `randomness="same"`; vmap's default `randomness="error"` raises. Differentiable in params.

    >>> attr = fattr.lime(f, samples=200)
    >>> g = torch.Generator().manual_seed(0)
    >>> a = attr(params, x, labels, feature_mask=segments, generator=g)

    Ribeiro, Singh, Guestrin, "'Why Should I Trust You?': Explaining the Predictions of Any
    Classifier" (2016), https://arxiv.org/abs/1602.04938
    """
    check_count(samples, "samples", "lime")
    if isinstance(alpha, bool) or not isinstance(alpha, numbers.Real) or not alpha >= 0:
        raise FattrError(f"lime: alpha (the ridge penalty) must be a number >= 0, got {alpha!r}.")
    if isinstance(kernel_width, bool) or not isinstance(kernel_width, numbers.Real) or \
            not kernel_width > 0:
        raise FattrError(f"lime: kernel_width must be a number > 0, got {kernel_width!r}.")
    if kernel_space not in KERNEL_SPACES:
        raise FattrError(f"lime: kernel_space must be one of {', '.join(KERNEL_SPACES)}, got "
                         f"{kernel_space!r}.")

    def solve(game: Game, generator: torch.Generator | None) -> Tensor:
        keep = bernoulli_coalitions(samples, game.features.count, generator, game.device)
        values = game.coalitions(keep)
        distance = cosine_distance(keep, game.flat(), game.flat_fill(), game.features,
                                   kernel_space)
        weights = torch.exp(-distance**2 / (2 * kernel_width**2)).to(values.dtype)
        return least_squares(keep.to(values.dtype), values, weights, float(alpha),
                             intercept=True)

    return feature_method(f, "lime", solve, batch_size, output, lime.__doc__,
                          per_call=("baseline", "feature_mask", "generator"))
