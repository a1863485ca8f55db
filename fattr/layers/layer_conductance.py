"""Layer Conductance (Dhamdhere et al. 2018)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from einops import rearrange
from torch import Tensor

from fattr.core.baselines import BaselineSpec, baselines_for
from fattr.core.call import Call, attribution
from fattr.core.chunking import chunked
from fattr.core.model import ModelFn, Params
from fattr.core.paths import line_points
from fattr.core.quadrature import quadrature
from fattr.layers.paths import path_method
from fattr.layers.taps import LayerSpec, empty_layer_output


def layer_conductance(f: ModelFn, layer: LayerSpec, steps: int = 50,
                      method: str = "gausslegendre", batch_size: int | None = None, *,
                      attribute_to_input: bool = False,
                      output: Callable[[Any], Tensor] | None = None) -> Callable[..., Tensor]:
    """How much of the output change along the input path flows through each layer neuron.

        x_i = x' + alpha_i (x - x'), i = 0..steps (the rule's steps + 1 nodes, as captum)
        C = sum_{i < steps} (a(x_{i+1}) - a(x_i)) * d y_t / d a at x_i

    the chain-rule split of Integrated Gradients over the layer's neurons; summed over the
    layer it approaches f(x) - f(x') as steps grow.

    Args: as `fattr.layer_integrated_gradients` (default 50 steps, gausslegendre,
    attribute_to_input); the
    quadrature WEIGHTS are not used, only its nodes, as in captum's LayerConductance.

    Returns `attr(params, x, target=None, baseline=None)` shaped like the layer output.

    >>> c = fattr.layer_conductance(f, "layer3")(params, x, target=labels)

    Dhamdhere, Sundararajan, Yan, "How Important Is a Neuron?" (2018),
    https://arxiv.org/abs/1805.12233
    """
    name = "layer_conductance"
    model, tap = path_method(f, layer, steps, method, batch_size, output, name,
                             attribute_to_input)

    def compute(params: Params, call: Call, baseline: BaselineSpec = None) -> Any:
        xs = call.inputs
        starts = baselines_for(baseline, xs, name)
        nodes = steps + 1
        alphas, _ = quadrature(method, nodes, xs[0])

        def node(step: Tensor, example: Tensor) -> tuple[Tensor, ...]:
            points = line_points(starts, xs, alphas[step], example)
            tapped = tap.gradients(params, call, points, example)
            return (*tapped.gradients, *tapped.activations)

        step = torch.arange(nodes, device=xs[0].device).repeat_interleave(call.batch)
        example = torch.arange(call.batch, device=xs[0].device).repeat(nodes)
        both = chunked(node, step, example, batch_size=batch_size)
        both = [rearrange(t, "(node b) ... -> node b ...", node=nodes) for t in both]
        grads, acts = both[: len(both) // 2], both[len(both) // 2:]
        return tap.pack([((a[1:] - a[:-1]) * g[:-1]).sum(0) for g, a in zip(grads, acts)])

    return attribution(model, compute, empty=empty_layer_output(tap),
                       batched_kwargs=("baseline",), doc=layer_conductance.__doc__)
