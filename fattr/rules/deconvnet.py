"""Deconvnet (Zeiler and Fergus 2014)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from torch import Tensor

from fattr.core.call import attribution
from fattr.core.model import ModelFn, as_model
from fattr.rules.activation import ActivationRule
from fattr.rules.apply import formulation, rule_gradient
from fattr.rules.nonlinearities import RELU

DECONV = ActivationRule("deconvnet", lambda g, x, y, fn: g.relu(), (RELU,))


def deconvnet(f: ModelFn, *, mode: str = "function",
              output: Callable[[Any], Tensor] | None = None) -> Callable[..., Tensor]:
    """The input gradient with every ReLU's backward replaced by a ReLU of the gradient,
    ignoring the forward mask: `dx = max(dy, 0)`.

    Every `nn.ReLU` (also in-place ones) and every functional ReLU call inside the model follows
    the rule, on a rewritten copy of the module tree; max pooling keeps its switches (the plain
    gradient), other activations their gradient, as in captum's Deconvolution.

    Args:
        f: a model from `fattr.functional(model)` (or `fattr.per_example` of one).
        mode: "function" (default, a custom autograd Function) or "hook" (tensor hooks, for
            `torch.compile`); see `fattr.guided_backprop`.
        output: picks a tensor from the model's output.

    Returns `attr(params, x, target=None)` shaped like x (the modified gradient, not times the
    input, as captum). Differentiable in the params.

    >>> a = fattr.deconvnet(f)(params, x, target=labels)

    Zeiler and Fergus, "Visualizing and Understanding Convolutional Networks" (2014),
    https://arxiv.org/abs/1311.2901
    """
    model = as_model(f, output, "deconvnet")
    rule = formulation(DECONV, mode, "deconvnet")
    return attribution(model, rule_gradient(model, rule), doc=deconvnet.__doc__,
                       compilable=mode == "hook")
