"""Layer Conductance (Dhamdhere et al. 2018)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor

from fattr.core.baselines import BaselineSpec, baseline_like
from fattr.core.chunking import chunked
from fattr.core.gradients import fold
from fattr.core.model import Call, ModelFn, Params, attribution
from fattr.core.paths import straight_path
from fattr.core.quadrature import quadrature
from fattr.layers.paths import path_method
from fattr.layers.taps import LayerSpec, empty_layer_output


def layer_conductance(f: ModelFn, layer: LayerSpec, steps: int = 50,
                      method: str = "gausslegendre", batch_size: int | None = None, *,
                      output: Callable[[Any], Tensor] | None = None) -> Callable[..., Tensor]:
    """How much of the output change along the input path flows through each layer neuron.

        x_i = x' + alpha_i (x - x'), i = 0..steps (the rule's steps + 1 nodes, as captum)
        C = sum_{i < steps} (a(x_{i+1}) - a(x_i)) * d y_t / d a at x_i

    the chain-rule split of Integrated Gradients over the layer's neurons; summed over the
    layer it approaches f(x) - f(x') as steps grow.

    Args: as `fattr.layer_integrated_gradients` (default 50 steps, gausslegendre); the
    quadrature WEIGHTS are not used, only its nodes, as in captum's LayerConductance.

    Returns `attr(params, x, target=None, baseline=None)` shaped like the layer output.

    >>> c = fattr.layer_conductance(f, "layer3")(params, x, target=labels)

    Dhamdhere, Sundararajan, Yan, "How Important Is a Neuron?" (2018),
    https://arxiv.org/abs/1805.12233
    """
    name = "layer_conductance"
    model, tap = path_method(f, layer, steps, method, batch_size, output, name)

    def compute(params: Params, call: Call, baseline: BaselineSpec = None) -> Tensor:
        x = call.x
        alphas, _ = quadrature(method, steps + 1, x)
        rows, example = fold(straight_path(baseline_like(baseline, x, name), x, alphas))

        def chunk(inputs: Tensor, index: Tensor) -> Tensor:
            tapped = tap.gradients(params, inputs, call.target, index)
            return torch.stack([tapped.gradients[0], tapped.activations[0]], 1)

        both = chunked(chunk, rows, example, batch_size=batch_size)
        both = both.reshape(steps + 1, x.shape[0], *both.shape[1:])
        g, a = both[:, :, 0], both[:, :, 1]
        return ((a[1:] - a[:-1]) * g[:-1]).sum(0)

    return attribution(model, compute, empty=empty_layer_output(tap),
                       batched_kwargs=("baseline",), doc=layer_conductance.__doc__)
