"""Layer activation: a layer's output, as an attribution function."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from torch import Tensor

from fattr.core.call import Call, attribution
from fattr.core.model import ModelFn, Params
from fattr.layers.paths import layer_tap
from fattr.layers.taps import LayerSpec, empty_layer_output


def layer_activation(f: ModelFn, layer: LayerSpec, *, attribute_to_input: bool = False,
                     output: Callable[[Any], Tensor] | None = None) -> Callable[..., Tensor]:
    """The output of `layer` for each example (captum's LayerActivation).

    Args:
        f: a model function from `fattr.functional` (or `per_example` of one).
        layer: the dotted name from `model.named_modules()`, or the submodule itself.
        attribute_to_input: the layer's positional inputs instead of its output (captum's
            attribute_to_layer_input; default False). A layer that returns (or takes)
            several tensors gives a tuple, one entry per tensor.
        output: picks a tensor from the model's output (unused here; accepted for uniformity).

    Returns `attr(params, x, target=None) -> Tensor` shaped like the layer output (B, ...); the
    target is not used (a target other than None is checked against the model's output by one
    extra forward pass). The model runs only up to the layer. `x` may hold integers (token ids).

    >>> acts = fattr.layer_activation(f, "layer3")(params, x)
    """
    model, tap = layer_tap(f, layer, output, "layer_activation", attribute_to_input)

    def compute(params: Params, call: Call) -> Any:
        call.check_target(model, params)
        return tap.pack(tap.read(params, call, call.inputs))

    return attribution(model, compute, gradient=False, empty=empty_layer_output(tap),
                       doc=layer_activation.__doc__)
