"""What the layer methods share: the tap at a layer's output or input, and the path checks.

A layer path either moves the INPUT (the layer sees its own tensors at each point: internal
influence, conductance) or moves the LAYER's tensors while the input stays x (layer integrated
gradients). Points are (step, example) rows built per chunk by `fattr.core.chunking.path_sum`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from torch import Tensor

from fattr.core.chunking import check_batch_size
from fattr.core.model import Model, ModelFn, as_model
from fattr.core.quadrature import check_rule
from fattr.errors import FattrTypeError
from fattr.layers.taps import LayerSpec, Tap


def layer_tap(f: ModelFn, layer: LayerSpec, output: Callable[[Any], Tensor] | None, name: str,
              attribute_to_input: bool = False, model: Model | None = None,
              ) -> tuple[Model, Tap]:
    """(model, tap) for a layer method: the tap reads the layer's output, or its positional
    inputs with `attribute_to_input` (captum's attribute_to_layer_input). `model` is the model
    to run under the tap when it is not `f` itself (a rule-rewritten copy)."""
    if not isinstance(attribute_to_input, bool):
        raise FattrTypeError(f"{name}: attribute_to_input must be True or False, got "
                             f"{attribute_to_input!r}.")
    base = as_model(f, output, name)
    side = "input" if attribute_to_input else "output"
    return base, Tap(model or base, layer, name, side=side)


def path_method(f: ModelFn, layer: LayerSpec, steps: int, method: str, batch_size: int | None,
                output: Callable[[Any], Tensor] | None, name: str,
                attribute_to_input: bool = False) -> tuple[Model, Tap]:
    """The constructor checks every layer path method shares; returns (model, tap)."""
    check_rule(method, steps, name)
    check_batch_size(batch_size, name)
    return layer_tap(f, layer, output, name, attribute_to_input)
