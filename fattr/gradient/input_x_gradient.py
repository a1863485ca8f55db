"""Input x Gradient (Shrikumar et al. 2016)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from torch import Tensor

from fattr.core.gradients import input_gradient
from fattr.core.model import Call, ModelFn, Params, as_model, attribution


def input_x_gradient(f: ModelFn, *, output: Callable[[Any], Tensor] | None = None,
                     ) -> Callable[..., Tensor]:
    """The input times its gradient: `x * d y_t / d x`.

    Returns `attr(params, x, target=None) -> Tensor` shaped like x. For a linear model with no
    bias this is exactly each feature's contribution.

    Shrikumar, Greenside, Shcherbina, Kundaje, "Not Just a Black Box" (2016),
    https://arxiv.org/abs/1605.01713
    """
    model = as_model(f, output, "input_x_gradient")

    def compute(params: Params, call: Call) -> Tensor:
        gradient, _ = input_gradient(model, params, call.x, call.target)
        return call.x * gradient

    return attribution(model, compute, doc=input_x_gradient.__doc__)
