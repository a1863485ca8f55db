"""Neuron Conductance (Dhamdhere et al. 2018)."""

from __future__ import annotations

import numbers
from collections.abc import Callable
from dataclasses import replace
from typing import Any, Union

from torch import Tensor

from fattr.core.baselines import BaselineSpec, baselines_for
from fattr.core.call import Call, attribution
from fattr.core.chunking import path_sum
from fattr.core.gradients import input_gradient, scaled
from fattr.core.inputs import tmap
from fattr.core.model import ModelFn, Params, as_model
from fattr.core.paths import line_points
from fattr.core.quadrature import quadrature
from fattr.core.targets import Target
from fattr.errors import FattrError
from fattr.layers.paths import path_method
from fattr.layers.taps import LayerSpec
from fattr.layers.to_layer import LayerModel

Neuron = Union[int, tuple, Callable[[Tensor], Tensor]]


def neuron_conductance(f: ModelFn, layer: LayerSpec, neuron: Neuron, steps: int = 50,
                       method: str = "riemann_trapezoid", batch_size: int | None = None, *,
                       output: Callable[[Any], Tensor] | None = None) -> Callable[..., Tensor]:
    """How much of a layer neuron's conductance flows through each input feature.

        NC = (x - x') * sum_i w_i (d y_t / d n)(x_i) * (d n / d x)(x_i)
        x_i = x' + alpha_i (x - x')

    for the neuron n of `layer`; summed over the input it gives the neuron's conductance.

    Args:
        f: a model function from `fattr.functional` (or `per_example` of one).
        layer: the dotted name from `model.named_modules()`, or the submodule.
        neuron: an int (the flattened neuron index of the layer output, as
            `to_layer(..., flatten=True)`), a tuple indexing every axis after the batch axis,
            or a callable from the layer output (B, ...) to one value per example.
        steps, method: the quadrature rule (default 50 steps, riemann_trapezoid as captum).
            fattr's trapezoid rule is the true one, so its result is captum's times
            steps / (steps - 1) (captum's weights sum to (steps - 1) / steps).
        batch_size: the most path points per forward call; None sends all at once.
        output: picks a tensor from the model's output.

    Returns `attr(params, x, target=None, baseline=None)` shaped like x.

    >>> nc = fattr.neuron_conductance(f, "layer3", neuron=(5, 2, 2))(params, x, target=labels)

    Dhamdhere, Sundararajan, Yan, "How Important Is a Neuron?" (2018),
    https://arxiv.org/abs/1805.12233
    """
    name = "neuron_conductance"
    flat = isinstance(neuron, numbers.Integral) and not isinstance(neuron, bool)
    if not (flat or callable(neuron) or (isinstance(neuron, tuple) and neuron and all(
            isinstance(i, numbers.Integral) and not isinstance(i, bool) for i in neuron))):
        raise FattrError(f"{name}: neuron must be an int (flattened index), a tuple of ints "
                         f"(one per layer axis) or a callable, got {neuron!r}.")
    model, tap = path_method(f, layer, steps, method, batch_size, output, name)
    neuron_model = as_model(LayerModel(tap, flatten=flat), None, name)

    def compute(params: Params, call: Call, baseline: BaselineSpec = None) -> Tensor:
        xs = call.inputs
        starts = baselines_for(baseline, xs, name)
        alphas, weights = quadrature(method, steps, xs[0])
        through_neuron = replace(call, target=Target(neuron, call.batch, xs[0].device, name))

        def weighted_gradient(step: Tensor, example: Tensor) -> tuple[Tensor, ...]:
            points = line_points(starts, xs, alphas[step], example)
            layer_grad = tap.one(tap.gradients(params, call, points, example).gradients)
            through = through_neuron.target.select(layer_grad.flatten(1) if flat else layer_grad,
                                                   example)
            neuron_grads, _ = input_gradient(neuron_model, params, points, through_neuron,
                                             example)
            return scaled(neuron_grads, through * weights[step])

        total = path_sum(weighted_gradient, steps, call.batch, batch_size, xs[0].device)
        return call.unpack(tmap(lambda x, s, g: (x - s) * g, xs, starts, total))

    return attribution(model, compute, batched_kwargs=("baseline",),
                       doc=neuron_conductance.__doc__)
