"""Layer gradient times activation."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from torch import Tensor

from fattr.core.model import Call, ModelFn, Params, as_model, attribution
from fattr.layers.taps import LayerSpec, Tap, empty_layer_output


def layer_gradient_x_activation(f: ModelFn, layer: LayerSpec, *,
                                output: Callable[[Any], Tensor] | None = None,
                                ) -> Callable[..., Tensor]:
    """The layer's output times the gradient of the target score with respect to it.

        attr = a * d y_t / d a,   a = layer output

    (captum's LayerGradientXActivation with its default multiply_by_inputs=True.)

    Args:
        f: a model function from `fattr.functional` (or `per_example` of one).
        layer: the dotted name from `model.named_modules()`, or the submodule itself.
        output: picks a tensor from the model's output.

    Returns `attr(params, x, target=None) -> Tensor` shaped like the layer output (B, ...).
    `x` may hold integers (token ids) when the layer is, say, an embedding.

    >>> a = fattr.layer_gradient_x_activation(f, "layer3")(params, x, target=labels)

    Shrikumar, Greenside, Shcherbina, Kundaje, "Not Just a Black Box" (2016),
    https://arxiv.org/abs/1605.01713
    """
    model = as_model(f, output, "layer_gradient_x_activation")
    tap = Tap(model, layer, "layer_gradient_x_activation")

    def compute(params: Params, call: Call) -> Tensor:
        tapped = tap.gradients(params, call.x, call.target)
        return tapped.gradients[0] * tapped.activations[0]

    return attribution(model, compute, gradient=False, empty=empty_layer_output(tap),
                       doc=layer_gradient_x_activation.__doc__)
