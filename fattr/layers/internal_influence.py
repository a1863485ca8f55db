"""Internal Influence (Leino et al. 2018)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from torch import Tensor

from fattr.core.baselines import BaselineSpec, baselines_for
from fattr.core.call import Call, attribution
from fattr.core.chunking import path_sum
from fattr.core.gradients import scaled
from fattr.core.model import ModelFn, Params
from fattr.core.paths import line_points
from fattr.core.quadrature import quadrature
from fattr.layers.paths import path_method
from fattr.layers.taps import LayerSpec, empty_layer_output


def internal_influence(f: ModelFn, layer: LayerSpec, steps: int = 50,
                       method: str = "gausslegendre", batch_size: int | None = None, *,
                       attribute_to_input: bool = False,
                       output: Callable[[Any], Tensor] | None = None) -> Callable[..., Tensor]:
    """The layer gradient integrated along the input path from a baseline to x.

        II = sum_i w_i d y_t / d layer  at input x' + alpha_i (x - x')

    (not multiplied by anything: the average influence of each layer neuron along the path).

    Args: as `fattr.layer_integrated_gradients` (default 50 steps, gausslegendre,
    attribute_to_input).

    Returns `attr(params, x, target=None, baseline=None)` shaped like the layer output.

    >>> ii = fattr.internal_influence(f, "layer3")(params, x, target=labels)

    Leino, Sen, Datta, Fredrikson, Li, "Influence-Directed Explanations for Deep Convolutional
    Networks" (2018), https://arxiv.org/abs/1802.03788
    """
    name = "internal_influence"
    model, tap = path_method(f, layer, steps, method, batch_size, output, name,
                             attribute_to_input)

    def compute(params: Params, call: Call, baseline: BaselineSpec = None) -> Any:
        xs = call.inputs
        starts = baselines_for(baseline, xs, name)
        alphas, weights = quadrature(method, steps, xs[0])

        def weighted_gradient(step: Tensor, example: Tensor) -> tuple[Tensor, ...]:
            points = line_points(starts, xs, alphas[step], example)
            return scaled(tap.gradients(params, call, points, example).gradients, weights[step])

        return tap.pack(path_sum(weighted_gradient, steps, call.batch, batch_size,
                                 xs[0].device))

    return attribution(model, compute, empty=empty_layer_output(tap),
                       batched_kwargs=("baseline",), doc=internal_influence.__doc__)
