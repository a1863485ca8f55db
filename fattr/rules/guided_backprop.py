"""Guided Backpropagation (Springenberg et al. 2015)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from torch import Tensor

from fattr.core.gradients import input_gradient
from fattr.core.model import Call, ModelFn, Params, as_model, attribution
from fattr.rules.activation import ActivationRule
from fattr.rules.apply import under_activation_rule

GUIDED = ActivationRule("guided_backprop", lambda g, x, y: g.clamp(min=0) * (x > 0))


def guided_backprop(f: ModelFn, *, output: Callable[[Any], Tensor] | None = None,
                    ) -> Callable[..., Tensor]:
    """The input gradient with every ReLU's backward passing only positive gradient where the
    forward input was positive: `dx = dy * 1[x > 0] * 1[dy > 0]`.

    Every `nn.ReLU` (also in-place ones) and every functional ReLU call (`F.relu`, `torch.relu`,
    `Tensor.relu` and in-place forms) inside the model follows the rule, on a rewritten copy of
    the module tree; the user's model is untouched. Returns `attr(params, x, target=None)`
    shaped like x (the gradient, not times the input, as captum). Differentiable in the params.

    `f` must come from `fattr.functional(model)`.

    Springenberg, Dosovitskiy, Brox, Riedmiller, "Striving for Simplicity: The All
    Convolutional Net" (2015), https://arxiv.org/abs/1412.6806
    """
    model = as_model(f, output, "guided_backprop")
    guided = under_activation_rule(model, GUIDED)

    def compute(params: Params, call: Call) -> Tensor:
        return input_gradient(guided, params, call.x, call.target)[0]

    return attribution(model, compute, doc=guided_backprop.__doc__)
