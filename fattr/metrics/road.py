"""ROAD (Rong et al. 2022): remove features in order of relevance, impute them from their
neighbours (noisy linear imputation), and integrate the target score."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from fattr.core.model import ModelFn, Params
from fattr.core.targets import TargetSpec
from fattr.errors import FattrError
from fattr.metrics.base import Batch, check_count
from fattr.metrics.curves import Fill, Output, curve_metric

# ROAD's neighbour weights: 1/6 for the 4 direct neighbours, 1/12 for the 4 diagonal ones.
_WEIGHTS = ((1 / 12, 1 / 6, 1 / 12), (1 / 6, 0.0, 1 / 6), (1 / 12, 1 / 6, 1 / 12))


def linear_imputation(x: Tensor, removed: Tensor, iterations: int) -> Tensor:
    """Removed pixels of x (N, C, H, W) become the weighted mean of their 8 neighbours (ROAD's
    weights; neighbours outside the image are left out and the weights renormalised), where
    the neighbours may be removed pixels themselves: one sparse linear system per image and
    channel, solved by `iterations` conjugate-gradient steps (batched, matrix-free: the
    operator is a 3x3 convolution). A removed region that touches no kept pixel becomes 0."""
    n, c, h, w = x.shape
    kernel = torch.tensor(_WEIGHTS, dtype=x.dtype, device=x.device).view(1, 1, 3, 3)
    neighbours = lambda v: F.conv2d(v, kernel, padding=1)
    images = x.reshape(n * c, 1, h, w)
    mask = removed.expand(x.shape).reshape(n * c, 1, h, w).to(x.dtype)
    degree = neighbours(torch.ones_like(images[:1]))  # in-image neighbour weight of each pixel
    operator = lambda u: mask * (degree * u - neighbours(u))  # SPD on the removed pixels
    kept = images * (1 - mask)
    residual = mask * neighbours(kept)
    solution = torch.zeros_like(images)
    direction = residual
    norm = _dot(residual, residual)
    tolerance = torch.finfo(x.dtype).eps ** 2 * norm
    for _ in range(iterations):  # fixed count: no data-dependent loop
        moved = operator(direction)
        alpha = _ratio(norm, _dot(direction, moved))
        solution = solution + alpha * direction
        residual = residual - alpha * moved
        new_norm = _dot(residual, residual)
        # a converged system stops moving (tiny residuals would turn into slow denormals)
        done = new_norm <= tolerance
        residual = torch.where(done, 0.0, residual)
        new_norm = torch.where(done, 0.0, new_norm)
        direction = residual + _ratio(new_norm, norm) * direction
        norm = new_norm
    return (kept + mask * solution).reshape(x.shape)


def _dot(a: Tensor, b: Tensor) -> Tensor:
    return (a * b).sum((1, 2, 3), keepdim=True)


def _ratio(num: Tensor, den: Tensor) -> Tensor:
    positive = den > 0
    return torch.where(positive, num / torch.where(positive, den, torch.ones_like(den)), 0.0)


def road(f: ModelFn, params: Params, x: Tensor, attribution: Tensor, target: TargetSpec = None,
         steps: int = 10, order: str = "morf", *, noise: float = 0.01,
         iterations: int | None = None, generator: torch.Generator | None = None,
         batch_size: int | None = None, output: Output = None) -> Tensor:
    """Area under the ROAD curve: features removed in order of relevance and imputed from their
    neighbours, which avoids the out-of-distribution artefact of a constant fill.

        ROAD(x) = integral_0^1 f(impute(x, top-q fraction of features))_t dq

    Noisy linear imputation: every removed pixel becomes the weighted mean of its 8 neighbours
    (weight 1/6 direct, 1/12 diagonal; removed neighbours count with their own imputed
    values), solved per image and channel, plus N(0, noise^2) noise. The noise is drawn once
    per example from `generator` and shared by the steps. The reference implementation solves
    the sparse system exactly (scipy spsolve); fattr runs batched conjugate gradients, which
    agree to about 1e-5 with the default number of iterations.

    Args:
        f, params, x, target: x must be images (B, C, H, W) (one (C, H, W) image for a
            per-example model).
        attribution: (B, C, H, W) or (B, 1, H, W) (whole pixels); ranked by value.
        steps: curve points minus one (default 10: ROAD's 10% grid, ending at 100%).
        order: "morf" (most relevant first, lower is better, default) or "lerf" (least
            relevant first, higher is better).
        noise: standard deviation of the imputation noise (default 0.01, ROAD's value; in the
            units of x).
        iterations: conjugate-gradient steps (default 2 * (H + W)).
        batch_size: the most model inputs per forward call.
        output: picks a tensor from the model's output (`lambda o: o.softmax(-1)` for
            probabilities).

    Returns a Tensor (B,) (one value for a per-example model), differentiable in params and x.

    Rong, Leemann, Borisov, Kasneci, Kasneci, "A Consistent and Efficient Evaluation Strategy
    for Attribution Methods" (2022), https://arxiv.org/abs/2202.00449
    """
    method = "road"
    if order not in ("morf", "lerf"):
        raise FattrError(f"{method}: order must be 'morf' (most relevant first) or 'lerf' "
                         f"(least relevant first), got {order!r}.")
    if not noise >= 0:
        raise FattrError(f"{method}: noise must be >= 0, got {noise!r}.")
    if iterations is not None:
        check_count(iterations, "iterations", method, minimum=0)

    def fill(batch: Batch) -> Fill:
        x = batch.x
        if x.ndim != 4:
            shape = tuple(x.shape[1:]) if batch.single else tuple(x.shape)
            raise FattrError(f"{method}: x must be images (B, C, H, W) (one (C, H, W) image "
                             f"for a per-example model), got shape {shape}; ROAD imputes "
                             "pixels from their spatial neighbours.")
        count = 2 * (x.shape[2] + x.shape[3]) if iterations is None else iterations
        jitter = noise * torch.randn(x.shape, generator=generator, dtype=x.dtype, device=x.device)

        def impute(rows: Tensor, removed: Tensor, example: Tensor) -> Tensor:
            filled = linear_imputation(rows, removed, count)
            return torch.where(removed, filled + jitter[example], rows)

        return impute

    return curve_metric(method, f, params, x, attribution, target, steps, batch_size, output,
                        fill, descending=order == "morf")
