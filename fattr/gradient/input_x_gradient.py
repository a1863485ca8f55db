"""Input x Gradient (Shrikumar et al. 2016)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor

from fattr.core.call import Call, attribution
from fattr.core.gradients import input_gradient
from fattr.core.inputs import tmap
from fattr.core.model import ModelFn, Params, as_model


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
        gradients, _ = input_gradient(model, params, call.inputs, call)
        return call.unpack(tmap(torch.mul, call.inputs, gradients))

    return attribution(model, compute, doc=input_x_gradient.__doc__)
