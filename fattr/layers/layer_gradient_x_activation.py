"""Layer gradient times activation."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor

from fattr.core.call import Call, attribution
from fattr.core.inputs import tmap
from fattr.core.model import ModelFn, Params
from fattr.layers.paths import layer_tap
from fattr.layers.taps import LayerSpec, empty_layer_output


def layer_gradient_x_activation(f: ModelFn, layer: LayerSpec, *,
                                attribute_to_input: bool = False,
                                output: Callable[[Any], Tensor] | None = None,
                                ) -> Callable[..., Tensor]:
    """The layer's output times the gradient of the target score with respect to it.

        attr = a * d y_t / d a,   a = layer output

    (captum's LayerGradientXActivation with its default multiply_by_inputs=True.)

    Args:
        f: a model function from `fattr.functional` (or `per_example` of one).
        layer: the dotted name from `model.named_modules()`, or the submodule itself.
        attribute_to_input: the layer's positional inputs instead of its output (captum's
            attribute_to_layer_input; default False). A layer that returns (or takes)
            several tensors gives a tuple, one entry per tensor.
        output: picks a tensor from the model's output.

    Returns `attr(params, x, target=None) -> Tensor` shaped like the layer output (B, ...).
    `x` may hold integers (token ids) when the layer is, say, an embedding.

    >>> a = fattr.layer_gradient_x_activation(f, "layer3")(params, x, target=labels)

    Shrikumar, Greenside, Shcherbina, Kundaje, "Not Just a Black Box" (2016),
    https://arxiv.org/abs/1605.01713
    """
    model, tap = layer_tap(f, layer, output, "layer_gradient_x_activation", attribute_to_input)

    def compute(params: Params, call: Call) -> Any:
        tapped = tap.gradients(params, call, call.inputs)
        return tap.pack(tmap(torch.mul, tapped.gradients, tapped.activations))

    return attribution(model, compute, gradient=False, empty=empty_layer_output(tap),
                       doc=layer_gradient_x_activation.__doc__)
