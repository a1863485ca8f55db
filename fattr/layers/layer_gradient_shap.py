"""Layer GradientSHAP: expected layer gradients over random baselines and path points."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor

from fattr.core.baselines import baseline_distribution
from fattr.core.checks import check_count, check_non_negative
from fattr.core.chunking import check_batch_size, chunked
from fattr.core.gradients import fold
from fattr.core.model import Call, ModelFn, Params, as_model, attribution
from fattr.core.paths import random_paths
from fattr.layers.taps import LayerSpec, Tap, empty_layer_output


def layer_gradient_shap(f: ModelFn, layer: LayerSpec, samples: int = 5, stdev: float = 0.0,
                        batch_size: int | None = None, *,
                        output: Callable[[Any], Tensor] | None = None) -> Callable[..., Tensor]:
    """GradientSHAP at a layer: (a(x + e) - a(b)) times the layer gradient at a random point.

    For each of `samples` draws per example: a baseline b from `baselines`, noise
    e ~ N(0, stdev^2), alpha ~ U(0, 1); with p = b + alpha (x + e - b),

        LGS = mean over draws of (a(x + e) - a(b)) * d y_t / d a  at input p

    as captum's LayerGradientShap. The draws are made in the same order as
    `fattr.gradient_shap`, from `generator`, so the result does not depend on `batch_size`.

    Args: as `fattr.gradient_shap` plus `layer` (the dotted name or the submodule).

    Returns `attr(params, x, target=None, *, baselines=None, generator=None)` shaped like the
    layer output; `baselines` is a distribution (N, *x.shape[1:]) (None: one zero baseline).

    >>> a = fattr.layer_gradient_shap(f, "layer3", samples=20)(params, x, 1, baselines=refs)

    Lundberg and Lee, "A Unified Approach to Interpreting Model Predictions" (2017),
    https://arxiv.org/abs/1705.07874
    """
    name = "layer_gradient_shap"
    check_count(samples, "samples", name)
    check_non_negative(stdev, "stdev", name)
    check_batch_size(batch_size, name)
    model = as_model(f, output, name)
    tap = Tap(model, layer, name)

    def compute(params: Params, call: Call, baselines: Tensor | None = None,
                generator: torch.Generator | None = None) -> Tensor:
        x = call.x
        pool = baseline_distribution(baselines, x, name)
        start, end, points = random_paths(x, pool, samples, stdev, generator)
        points, example = fold(points)
        starts, ends = fold(start)[0], fold(end)[0]

        def chunk(inputs: Tensor, begin: Tensor, finish: Tensor, index: Tensor) -> Tensor:
            g = tap.gradients(params, inputs, call.target, index).gradients[0]
            return g * (tap.read(params, finish)[0] - tap.read(params, begin)[0]) / samples

        return chunked(chunk, points, starts, ends, example, batch_size=batch_size,
                       segments=(example, call.batch))

    return attribution(model, compute, empty=empty_layer_output(tap),
                       doc=layer_gradient_shap.__doc__)
