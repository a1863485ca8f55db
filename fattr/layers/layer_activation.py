"""Layer activation: a layer's output, as an attribution function."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from torch import Tensor

from fattr.core.model import Call, ModelFn, Params, as_model, attribution
from fattr.layers.taps import LayerSpec, Tap, empty_layer_output


def layer_activation(f: ModelFn, layer: LayerSpec, *,
                     output: Callable[[Any], Tensor] | None = None) -> Callable[..., Tensor]:
    """The output of `layer` for each example (captum's LayerActivation).

    Args:
        f: a model function from `fattr.functional` (or `per_example` of one).
        layer: the dotted name from `model.named_modules()`, or the submodule itself.
        output: picks a tensor from the model's output (unused here; accepted for uniformity).

    Returns `attr(params, x, target=None) -> Tensor` shaped like the layer output (B, ...); the
    target is not used. The model runs only up to the layer. `x` may hold integers (token ids).

    >>> acts = fattr.layer_activation(f, "layer3")(params, x)
    """
    model = as_model(f, output, "layer_activation")
    tap = Tap(model, layer, "layer_activation")

    def compute(params: Params, call: Call) -> Tensor:
        return tap.read(params, call.x)[0]

    return attribution(model, compute, gradient=False, empty=empty_layer_output(tap),
                       doc=layer_activation.__doc__)
