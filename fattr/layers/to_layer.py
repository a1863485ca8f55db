"""`to_layer`: a model function whose output is one layer's output."""

from __future__ import annotations

from typing import Any

from torch import Tensor

from fattr.core.model import ModelFn, Params, PerExample, as_model
from fattr.errors import FattrError
from fattr.layers.taps import LayerSpec, Tap


class LayerModel:
    """`f` cut at a layer: `g(params, x)` is that layer's output (the model runs up to it).

    An int target is a neuron: the flattened index over the layer's non-batch axes."""

    flat_index = True

    def __init__(self, tap: Tap, flatten: bool):
        self.tap = tap
        self.module = tap.module
        self.flatten = flatten

    def __call__(self, params: Params, x: Tensor | tuple[Tensor, ...], *args: Any,
                 **kwargs: Any) -> Tensor:
        inputs = tuple(x) if isinstance(x, (tuple, list)) else (x,)
        forward = lambda model: model(params, x, *args, **kwargs)
        out = self.tap.one(self.tap._read(forward, self.tap._key(inputs)))
        return out.flatten(1) if self.flatten else out

    def __repr__(self) -> str:
        return f"to_layer({self.tap.model.fn!r}, {self.tap.names[0]!r})"


def to_layer(f: ModelFn, layer: LayerSpec, *, flatten: bool = False) -> ModelFn:
    """The model function whose output is `layer`'s output: attribute a neuron to the input.

    `g = to_layer(f, layer)` runs `f` only up to `layer` and returns its output, so any
    attribution method explains a neuron: `fattr.integrated_gradients(g)(params, x, target=
    (c, i, j))` attributes channel c at position (i, j) of a conv layer. `target` picks a
    neuron: an int is the flattened neuron index over all axes after the batch axis (row-major,
    captum's `neuron_selector` as an int), a tuple indexes every axis, and the other target
    forms work as usual. With `flatten=True` the output itself is flattened to (B, N).

    Args:
        f: a model function from `fattr.functional` (or `per_example` of one).
        layer: the dotted name from `model.named_modules()`, or the submodule itself.
        flatten: flatten the layer output to (B, N) (default False).

    Returns a model function `g(params, x)`; per-example if `f` is. It keeps `.module`, so
    layer methods and rewriting work on it too.

    >>> g = fattr.to_layer(f, "layer3")
    >>> a = fattr.saliency(g)(params, x, target=(5, 2, 2))
    """
    model = as_model(f, None, "to_layer")
    if not isinstance(flatten, bool):
        raise FattrError(f"to_layer: flatten must be True or False, got {flatten!r}.")
    cut = LayerModel(Tap(model, layer, "to_layer"), flatten)
    return PerExample(cut) if model.per_example else cut
