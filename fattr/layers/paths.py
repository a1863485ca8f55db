"""Layer gradients along a path, the primitive under the layer path methods.

A path either moves the INPUT (the layer sees its own output at each point: internal influence,
conductance) or moves the LAYER's output while the input stays x (layer integrated gradients).
Points are folded into the batch axis and evaluated `batch_size` rows at a time.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from torch import Tensor

from fattr.core.chunking import check_batch_size, chunked
from fattr.core.gradients import fold
from fattr.core.model import Model, ModelFn, Params, as_model
from fattr.core.quadrature import check_rule
from fattr.core.targets import Target
from fattr.layers.taps import LayerSpec, Tap


def path_method(f: ModelFn, layer: LayerSpec, steps: int, method: str, batch_size: int | None,
                output: Callable[[Any], Tensor] | None, name: str) -> tuple[Model, Tap]:
    """The constructor checks every layer path method shares; returns (model, tap)."""
    check_rule(method, steps, name)
    check_batch_size(batch_size, name)
    model = as_model(f, output, name)
    return model, Tap(model, layer, name)


def layer_gradient_sum(tap: Tap, params: Params, x: Tensor, target: Target, weights: Tensor,
                       batch_size: int | None, *, inputs: Tensor | None = None,
                       layer_points: Tensor | None = None) -> Tensor:
    """sum_s weights[s] * d y_t / d layer at each point s of the path, shape (B, *layer).

    Exactly one of: `inputs` (S, B, ...) input points, or `layer_points` (S, B, *layer) values
    put in place of the layer's output while the model runs on x. `weights`: (S,) or (S, B).
    """
    points = inputs if inputs is not None else layer_points
    steps, batch = points.shape[:2]
    rows, example = fold(points)
    row_weights = weights.reshape(steps, -1).expand(steps, batch).reshape(-1)

    def chunk(values: Tensor, w: Tensor, index: Tensor) -> Tensor:
        if inputs is not None:
            g = tap.gradients(params, values, target, index).gradients[0]
        else:
            g = tap.gradients(params, x[index], target, index, at=[values]).gradients[0]
        return g * w.reshape(-1, *([1] * (g.ndim - 1)))

    return chunked(chunk, rows, row_weights, example, batch_size=batch_size,
                   segments=(example, batch))
