"""Internal Influence (Leino et al. 2018)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from torch import Tensor

from fattr.core.baselines import BaselineSpec, baseline_like
from fattr.core.model import Call, ModelFn, Params, attribution
from fattr.core.paths import straight_path
from fattr.core.quadrature import quadrature
from fattr.layers.paths import layer_gradient_sum, path_method
from fattr.layers.taps import LayerSpec, empty_layer_output


def internal_influence(f: ModelFn, layer: LayerSpec, steps: int = 50,
                       method: str = "gausslegendre", batch_size: int | None = None, *,
                       output: Callable[[Any], Tensor] | None = None) -> Callable[..., Tensor]:
    """The layer gradient integrated along the input path from a baseline to x.

        II = sum_i w_i d y_t / d layer  at input x' + alpha_i (x - x')

    (not multiplied by anything: the average influence of each layer neuron along the path).

    Args: as `fattr.layer_integrated_gradients` (default 50 steps, gausslegendre).

    Returns `attr(params, x, target=None, baseline=None)` shaped like the layer output.

    >>> ii = fattr.internal_influence(f, "layer3")(params, x, target=labels)

    Leino, Sen, Datta, Fredrikson, Li, "Influence-Directed Explanations for Deep Convolutional
    Networks" (2018), https://arxiv.org/abs/1802.03788
    """
    name = "internal_influence"
    model, tap = path_method(f, layer, steps, method, batch_size, output, name)

    def compute(params: Params, call: Call, baseline: BaselineSpec = None) -> Tensor:
        x = call.x
        alphas, weights = quadrature(method, steps, x)
        points = straight_path(baseline_like(baseline, x, name), x, alphas)
        return layer_gradient_sum(tap, params, x, call.target, weights, batch_size,
                                  inputs=points)

    return attribution(model, compute, empty=empty_layer_output(tap),
                       batched_kwargs=("baseline",), doc=internal_influence.__doc__)
