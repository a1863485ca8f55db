"""Layer GradientSHAP: expected layer gradients over random baselines and path points."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor

from fattr.core.baselines import distributions_for
from fattr.core.call import Call, attribution
from fattr.core.checks import check_count, check_generator, check_non_negative
from fattr.core.chunking import check_batch_size, path_sum
from fattr.core.inputs import tmap
from fattr.core.model import ModelFn, Params
from fattr.core.paths import random_paths
from fattr.layers.paths import layer_tap
from fattr.layers.taps import LayerSpec, empty_layer_output


def layer_gradient_shap(f: ModelFn, layer: LayerSpec, samples: int = 5, stdev: float = 0.0,
                        batch_size: int | None = None, *, attribute_to_input: bool = False,
                        output: Callable[[Any], Tensor] | None = None) -> Callable[..., Tensor]:
    """GradientSHAP at a layer: (a(x + e) - a(b)) times the layer gradient at a random point.

    For each of `samples` draws per example: a baseline b from `baselines`, noise
    e ~ N(0, stdev^2), alpha ~ U(0, 1); with p = b + alpha (x + e - b),

        LGS = mean over draws of (a(x + e) - a(b)) * d y_t / d a  at input p

    as captum's LayerGradientShap. The draws are made in the same order as
    `fattr.gradient_shap`, from `generator`, so the result does not depend on `batch_size`.

    Args: as `fattr.gradient_shap` plus `layer` (the dotted name or the submodule) and
    `attribute_to_input` (as `fattr.layer_integrated_gradients`).

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
    model, tap = layer_tap(f, layer, output, name, attribute_to_input)

    def compute(params: Params, call: Call, baselines: Tensor | tuple | None = None,
                generator: torch.Generator | None = None) -> Any:
        check_generator(generator, name)
        xs = call.inputs
        pools = distributions_for(baselines, xs, name)
        draws = random_paths(xs, pools[0].shape[0], samples, stdev, generator)

        def sample(step: Tensor, example: Tensor) -> tuple[Tensor, ...]:
            starts, ends, points = draws.rows(pools, xs, step, example)
            gradients = tap.gradients(params, call, points, example).gradients
            begin, finish = tap.read(params, call, starts, example), \
                tap.read(params, call, ends, example)
            return tmap(lambda g, b, e: g * (e - b) / samples, gradients, begin, finish)

        return tap.pack(path_sum(sample, samples, call.batch, batch_size, xs[0].device))

    return attribution(model, compute, empty=empty_layer_output(tap),
                       doc=layer_gradient_shap.__doc__)
