"""Guided Backpropagation (Springenberg et al. 2015)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from torch import Tensor

from fattr.core.call import attribution
from fattr.core.model import ModelFn, as_model
from fattr.rules.activation import ActivationRule, keep_where_positive
from fattr.rules.apply import formulation, rule_gradient
from fattr.rules.nonlinearities import RELU

GUIDED = ActivationRule("guided_backprop", lambda g, x, y, fn: keep_where_positive(g.relu(), x),
                        (RELU,))


def guided_backprop(f: ModelFn, *, mode: str = "function",
                    output: Callable[[Any], Tensor] | None = None) -> Callable[..., Tensor]:
    """The input gradient with every ReLU's backward passing only positive gradient where the
    forward input was positive: `dx = dy * 1[x > 0] * 1[dy > 0]`.

    Every `nn.ReLU` (also in-place ones) and every functional ReLU call (`F.relu`, `torch.relu`,
    `Tensor.relu` and in-place forms) inside the model follows the rule, on a rewritten copy of
    the module tree; the user's model is untouched. Other activations keep their gradient, as
    in captum.

    Args:
        f: a model from `fattr.functional(model)` (or `fattr.per_example` of one).
        mode: "function" (default): the rule is a custom autograd Function; composes with grad,
            vmap, jacrev. "hook": the same rule as `Tensor.register_hook` on each ReLU output,
            which `torch.compile` can compile (custom Functions inside vmap cannot be compiled
            yet, pytorch issue 129845); same values and parameter gradients.
        output: picks a tensor from the model's output.

    Returns `attr(params, x, target=None)` shaped like x: the gradient, not times the input
    (as captum's GuidedBackprop). Differentiable in the params.

    >>> attr = fattr.guided_backprop(f)
    >>> a = attr(params, x, target=labels)

    Springenberg, Dosovitskiy, Brox, Riedmiller, "Striving for Simplicity: The All
    Convolutional Net" (2015), https://arxiv.org/abs/1412.6806
    """
    model = as_model(f, output, "guided_backprop")
    rule = formulation(GUIDED, mode, "guided_backprop")
    return attribution(model, rule_gradient(model, rule), doc=guided_backprop.__doc__,
                       compilable=mode == "hook")
