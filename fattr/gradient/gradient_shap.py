"""GradientSHAP (Lundberg and Lee 2017; captum's formulation)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor

from fattr.core.baselines import distributions_for
from fattr.core.call import Call, attribution
from fattr.core.checks import check_count, check_generator, check_non_negative
from fattr.core.chunking import check_batch_size, path_sum
from fattr.core.gradients import input_gradient
from fattr.core.inputs import tmap
from fattr.core.model import ModelFn, Params, as_model
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
    `baselines` is a distribution (N, *x.shape[1:]) (None: one zero baseline); for a tuple x,
    a tuple of distributions with the same N (row n of each is one reference). All random draws
    come from `generator` at once, so the result does not depend on `batch_size`.

    Lundberg and Lee, "A Unified Approach to Interpreting Model Predictions" (2017),
    https://arxiv.org/abs/1705.07874
    """
    check_count(samples, "samples", "gradient_shap")
    check_non_negative(stdev, "stdev", "gradient_shap")
    check_batch_size(batch_size, "gradient_shap")
    model = as_model(f, output, "gradient_shap")

    def compute(params: Params, call: Call, baselines: Tensor | tuple | None = None,
                generator: torch.Generator | None = None) -> Tensor:
        check_generator(generator, "gradient_shap")
        xs = call.inputs
        pools = distributions_for(baselines, xs, "gradient_shap")
        draws = random_paths(xs, pools[0].shape[0], samples, stdev, generator)

        def sample(step: Tensor, example: Tensor) -> tuple[Tensor, ...]:
            starts, ends, points = draws.rows(pools, xs, step, example)
            gradients, _ = input_gradient(model, params, points, call, example)
            return tmap(lambda g, s, e: g * (e - s) / samples, gradients, starts, ends)

        return call.unpack(path_sum(sample, samples, call.batch, batch_size, xs[0].device))

    return attribution(model, compute, doc=gradient_shap.__doc__)
