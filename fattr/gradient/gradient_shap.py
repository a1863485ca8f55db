"""GradientSHAP (Lundberg and Lee 2017; captum's formulation)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor

from fattr.core.baselines import baseline_distribution
from fattr.core.checks import check_count, check_non_negative
from fattr.core.chunking import check_batch_size, chunked
from fattr.core.gradients import fold, input_gradient
from fattr.core.model import Call, ModelFn, Params, as_model, attribution
from fattr.core.paths import random_paths


def gradient_shap(f: ModelFn, samples: int = 5, stdev: float = 0.0,
                  batch_size: int | None = None, *,
                  output: Callable[[Any], Tensor] | None = None) -> Callable[..., Tensor]:
    """Expected gradients over random baselines and random points on the path.

    For each of `samples` draws per example: a baseline b from `baselines`, Gaussian noise
    e ~ N(0, stdev^2) (absolute, as captum), a ~ U(0, 1); the attribution is the mean of
    grad f(b + a (x + e - b)) * (x + e - b). With stdev 0 and one baseline it converges to
    Integrated Gradients. The factor uses the noisy input, as captum does (the noise is
    applied to the input before the inner method sees it).

    Args:
        f: model function. samples: draws per example (captum's n_samples, default 5).
        stdev: absolute noise standard deviation (default 0). batch_size: the most model
            inputs per forward call.

    Returns `attr(params, x, target=None, *, baselines=None, generator=None)` shaped like x;
    `baselines` is a distribution (N, *x.shape[1:]) (None: one zero baseline). All random draws
    come from `generator` at once, so the result does not depend on `batch_size`.

    Lundberg and Lee, "A Unified Approach to Interpreting Model Predictions" (2017),
    https://arxiv.org/abs/1705.07874
    """
    check_count(samples, "samples", "gradient_shap")
    check_non_negative(stdev, "stdev", "gradient_shap")
    check_batch_size(batch_size, "gradient_shap")
    model = as_model(f, output, "gradient_shap")

    def compute(params: Params, call: Call, baselines: Tensor | None = None,
                generator: torch.Generator | None = None) -> Tensor:
        x = call.x
        pool = baseline_distribution(baselines, x, "gradient_shap")
        start, end, points = random_paths(x, pool, samples, stdev, generator)
        rows, example = fold(points)
        deltas, _ = fold((end - start) / samples)

        def chunk(inputs: Tensor, delta: Tensor, index: Tensor) -> Tensor:
            return input_gradient(model, params, inputs, call.target, index)[0] * delta

        return chunked(chunk, rows, deltas, example, batch_size=batch_size,
                       segments=(example, call.batch))

    return attribution(model, compute, doc=gradient_shap.__doc__)
