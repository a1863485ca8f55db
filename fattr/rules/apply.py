"""Running a model under rules: rewrite a copy of its module tree at each call."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import torch
from torch import Tensor, nn

from fattr.core.call import Call
from fattr.core.gradients import input_gradient
from fattr.core.model import FunctionalModel, Model, Params, call_module
from fattr.errors import FattrError, FattrTypeError
from fattr.rules.activation import ActivationRule, counting
from fattr.rules.rewrite import Rules, rewrite


class RewrittenModel:
    """A functional model that calls a rewritten copy of `base.module` with the call's params.

    The copy is made at every call (a shallow copy of the tree, about a millisecond for a
    ResNet), so it always follows the user's module: its training flags, swapped submodules.
    `module` is the user's module, for eval-mode checks and layer lookups. With `required`
    (a sentence naming the rule's activations), a forward in which no rule applied raises:
    the result would be the plain gradient.
    """

    def __init__(self, base: FunctionalModel, rules: Rules,
                 functions: Mapping[Callable, Callable] | None = None,
                 refuse: Mapping[Callable, str] | None = None, required: str | None = None):
        self.base, self.rules, self.functions, self.refuse = base, rules, functions, refuse
        self.required = required

    @property
    def module(self) -> nn.Module:
        return self.base.module

    def rewritten(self) -> nn.Module:
        return rewrite(self.base.module, self.rules, functions=self.functions, refuse=self.refuse)

    def __call__(self, params: Params, x: Tensor | tuple[Tensor, ...], *args: Any,
                 **kwargs: Any) -> Any:
        if self.required is None or torch.compiler.is_compiling():  # counting: a ContextVar
            return call_module(self.rewritten(), self.module, params, x, args, kwargs)
        with counting() as applied:
            out = call_module(self.rewritten(), self.module, params, x, args, kwargs)
        if applied[0] == 0:
            raise FattrError(self.required)
        return out


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
                          refuse: Mapping[Callable, str] | None = None,
                          functions: Mapping[Callable, Callable] | None = None,
                          required: bool = False) -> Model:
    """`model` with every covered activation, module or functional call, following `rule`
    (and `functions`, more routes). Fused modules that hold a covered nonlinearity (an LSTM's
    sigmoid and tanh, MultiheadAttention's softmax) are refused here; with `required`, a forward
    in which the rule never applies raises."""
    base = require_functional(model)
    check_fused(base.module, rule)
    names = ", ".join(a.name for a in rule.covers)
    message = (f"{rule.name}: the model has no {names} (module or functional call) for the "
               "rule to act on, so the result would be the plain gradient (captum returns it "
               "silently); use a gradient method, or a method with a rule for its activations "
               "(e.g. fattr.lrp(f, 'attnlrp') for GELU transformers).") if required else None
    rewritten = RewrittenModel(base, rule.module_rules(),
                               {**rule.function_rules(), **(functions or {})}, refuse, message)
    return Model(rewritten, model.output, model.per_example, model.method)


def fused_nonlinearities(module: nn.Module) -> tuple[str, ...]:
    """The nonlinearities a fused module computes inside one kernel, by activation name."""
    if isinstance(module, (nn.RNN, nn.RNNCell)):
        return ("Tanh",) if module.nonlinearity == "tanh" else ("ReLU",)
    if isinstance(module, (nn.LSTM, nn.LSTMCell, nn.GRU, nn.GRUCell)):
        return ("Sigmoid", "Tanh")
    if isinstance(module, nn.MultiheadAttention):
        return ("Softmax",)
    return ()


def check_fused(module: nn.Module, rule: ActivationRule) -> None:
    """Refuse fused modules whose inner nonlinearities the rule covers but cannot reach."""
    covered = {a.name for a in rule.covers}
    for name, sub in module.named_modules():
        inner = [n for n in fused_nonlinearities(sub) if n in covered]
        if inner:
            where = f"'{name}'" if name else "the model itself"
            raise FattrError(
                f"{rule.name}: {where} ({type(sub).__name__}) computes {' and '.join(inner)} "
                "inside one fused kernel, which the rule cannot reach: the result would treat "
                "them as linear (captum does so silently). Use a gradient method, or write the "
                "module with nn activation modules (e.g. an LSTM cell in torch ops).")


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
    input when `times_input`): guided backprop, deconvnet, rectgrad. A model in which the rule
    never applies raises (the result would be the plain gradient)."""
    ruled = under_activation_rule(model, rule, refuse, required=True)

    def compute(params: Params, call: Call) -> Tensor:
        gradients = input_gradient(ruled, params, call.inputs, call)[0]
        if times_input:
            gradients = tuple(g * x for g, x in zip(gradients, call.inputs))
        return call.unpack(gradients)

    return compute
