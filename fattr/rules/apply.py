"""Running a model under rules: rewrite a copy of its module tree at each call."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from torch import Tensor, nn

from fattr.core.call import Call
from fattr.core.gradients import input_gradient
from fattr.core.model import FunctionalModel, Model, Params, call_module
from fattr.errors import FattrError, FattrTypeError
from fattr.rules.activation import ActivationRule
from fattr.rules.rewrite import Rules, rewrite


class RewrittenModel:
    """A functional model that calls a rewritten copy of `base.module` with the call's params.

    The copy is made at every call (a shallow copy of the tree, about a millisecond for a
    ResNet), so it always follows the user's module: its training flags, swapped submodules.
    `module` is the user's module, for eval-mode checks and layer lookups.
    """

    def __init__(self, base: FunctionalModel, rules: Rules,
                 functions: Mapping[Callable, Callable] | None = None,
                 refuse: Mapping[Callable, str] | None = None):
        self.base, self.rules, self.functions, self.refuse = base, rules, functions, refuse

    @property
    def module(self) -> nn.Module:
        return self.base.module

    def rewritten(self) -> nn.Module:
        return rewrite(self.base.module, self.rules, functions=self.functions, refuse=self.refuse)

    def __call__(self, params: Params, x: Tensor | tuple[Tensor, ...], *args: Any,
                 **kwargs: Any) -> Any:
        return call_module(self.rewritten(), self.module, params, x, args, kwargs)


def require_functional(model: Model) -> FunctionalModel:
    """The FunctionalModel under `model`, or a TypeError that says how to get one."""
    if not isinstance(model.fn, FunctionalModel):
        raise FattrTypeError(
            f"{model.method}: this method rewrites the model's module tree, so the model must "
            f"come from `f, params = fattr.functional(model)`; got {model.fn!r}.")
    return model.fn


def under_rules(model: Model, rules: Rules, functions: Mapping[Callable, Callable] | None = None,
                refuse: Mapping[Callable, str] | None = None) -> Model:
    """`model` with its module tree rewritten by `rules` at every call."""
    rewritten = RewrittenModel(require_functional(model), rules, functions, refuse)
    return Model(rewritten, model.output, model.per_example, model.method)


def under_activation_rule(model: Model, rule: ActivationRule,
                          refuse: Mapping[Callable, str] | None = None) -> Model:
    """`model` with every covered activation, module or functional call, following `rule`."""
    return under_rules(model, rule.module_rules(), rule.function_rules(), refuse)


MODES = ("function", "hook")


def formulation(rule: ActivationRule, mode: str, method: str) -> ActivationRule:
    """The rule as a custom Function (`mode="function"`) or as tensor hooks (`"hook"`)."""
    if mode not in MODES:
        raise FattrError(f"{method}: mode must be 'function' (a custom autograd Function, the "
                         f"default) or 'hook' (tensor hooks, for torch.compile), got {mode!r}.")
    return rule.hooked() if mode == "hook" else rule


def rule_gradient(model: Model, rule: ActivationRule, *, times_input: bool = False,
                  refuse: Mapping[Callable, str] | None = None) -> Callable[..., Tensor]:
    """`compute(params, call)` for a method that is the input gradient under `rule` (times the
    input when `times_input`): guided backprop, deconvnet, rectgrad."""
    ruled = under_activation_rule(model, rule, refuse)

    def compute(params: Params, call: Call) -> Tensor:
        gradients = input_gradient(ruled, params, call.inputs, call)[0]
        if times_input:
            gradients = tuple(g * x for g, x in zip(gradients, call.inputs))
        return call.unpack(gradients)

    return compute
