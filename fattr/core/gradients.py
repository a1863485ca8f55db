"""Input gradients of the target score: the primitive under every gradient method.

The target is selected inside the function and `torch.func.grad` is taken of the sum over the
batch; examples are independent, so one pass gives every per-example gradient. The per-row
scores come back as aux. Paths and noise add a leading axis that is folded into the batch.
"""

from __future__ import annotations

import torch
from torch import Tensor
from torch.func import grad

from fattr.core.chunking import chunked
from fattr.core.model import Model, Params
from fattr.core.targets import Target


def input_gradient(model: Model, params: Params, x: Tensor, target: Target,
                   rows: Tensor | None = None) -> tuple[Tensor, Tensor]:
    """(d score / d x, score) for each row of x; `rows` maps rows to examples of `target`."""

    def score(inputs: Tensor) -> tuple[Tensor, Tensor]:
        chosen = target.select(model(params, inputs), rows)
        return chosen.sum(), chosen

    return grad(score, has_aux=True)(x)


def scores(model: Model, params: Params, x: Tensor, target: Target,
           rows: Tensor | None = None) -> Tensor:
    """The target score of each row of x, shape (N,)."""
    return target.select(model(params, x), rows)


def fold(points: Tensor) -> tuple[Tensor, Tensor]:
    """(S, B, ...) -> (S*B, ...) rows and the example index of each row."""
    steps, batch = points.shape[:2]
    rows = points.reshape(steps * batch, *points.shape[2:])
    example = torch.arange(batch, device=points.device).repeat(steps)
    return rows, example


def weighted_gradient_sum(model: Model, params: Params, points: Tensor, weights: Tensor,
                          target: Target, batch_size: int | None) -> Tensor:
    """sum_s weights[s, b] * grad f(points[s, b]) for each example b; points (S, B, ...).

    `weights` has shape (S,) or (S, B). Evaluated `batch_size` rows at a time.
    """
    steps, batch = points.shape[:2]
    rows, example = fold(points)
    row_weights = weights.reshape(steps, -1).expand(steps, batch).reshape(-1)

    def chunk(inputs: Tensor, w: Tensor, index: Tensor) -> Tensor:
        g, _ = input_gradient(model, params, inputs, target, index)
        return g * w.reshape(-1, *([1] * (g.ndim - 1)))

    return chunked(chunk, rows, row_weights, example, batch_size=batch_size,
                   segments=(example, batch))


def gradients(model: Model, params: Params, points: Tensor, target: Target,
              batch_size: int | None) -> Tensor:
    """grad f at every point of (S, B, ...), shape (S, B, ...), `batch_size` rows at a time."""
    rows, example = fold(points)
    g = chunked(lambda inputs, index: input_gradient(model, params, inputs, target, index)[0],
                rows, example, batch_size=batch_size)
    return g.reshape(points.shape)
