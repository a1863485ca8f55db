"""Activation rules: the forward unchanged, the backward replaced by a rule.

One generic `autograd.Function` serves every elementwise rule: `forward` runs the activation,
`backward` calls the rule's `backward(g, x, y)` written in differentiable torch ops (so double
backward and `torch.func.grad` of an attribution work; never `once_differentiable`), and
`generate_vmap_rule = True` lets `vmap` batch it. Forward-mode AD has no meaning for a modified
backward, so `jvp` raises a clear error.

An `ActivationRule` applies such a backward to modules (by `rewrite`) and to functional calls
(`F.relu`, `torch.relu`, `Tensor.relu`, and their in-place forms).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from fattr.errors import FattrError

Backward = Callable[[Tensor, Tensor, Tensor], Tensor]
ActivationFn = Callable[[Tensor], Tensor]


class RuleFunction(torch.autograd.Function):
    """y = activation(x); dx = backward(dy, x, y)."""

    generate_vmap_rule = True

    @staticmethod
    def forward(x: Tensor, activation: ActivationFn, backward: Backward, name: str) -> Tensor:
        with torch._C.DisableTorchFunction():  # the activation itself is not routed again
            return activation(x)

    @staticmethod
    def setup_context(ctx: Any, inputs: tuple, output: Tensor) -> None:
        x, _, backward, name = inputs
        ctx.save_for_backward(x, output)
        ctx.rule_backward, ctx.rule_name = backward, name

    @staticmethod
    def backward(ctx: Any, grad_output: Tensor) -> tuple:
        x, y = ctx.saved_tensors
        return ctx.rule_backward(grad_output, x, y), None, None, None

    @staticmethod
    def jvp(ctx: Any, *grad_inputs: Any) -> Tensor:
        raise FattrError(f"{ctx.rule_name}: forward-mode AD (jvp, jacfwd) is not defined for a "
                         "modified backward rule; use reverse mode (grad, vjp, jacrev).")


def apply_rule(x: Tensor, activation: ActivationFn, backward: Backward, name: str) -> Tensor:
    return RuleFunction.apply(x, activation, backward, name)


class RuleActivation(nn.Module):
    """An activation module whose backward follows a rule (what `rewrite` swaps in)."""

    def __init__(self, activation: ActivationFn, backward: Backward, name: str, replaced: str):
        super().__init__()
        self.activation, self.backward, self.rule_name = activation, backward, name
        self.replaced = replaced

    def forward(self, x: Tensor) -> Tensor:
        return apply_rule(x, self.activation, self.backward, self.rule_name)

    def extra_repr(self) -> str:
        return f"{self.rule_name} rule for {self.replaced}"


@dataclass(frozen=True)
class Activation:
    """How to recognise one activation and rebuild it as a plain function of x.

    `from_module(m)` and `from_call(*args, **kwargs)` (the functional call's arguments after x)
    return the activation as `x -> y`; `from_call` also says whether the call was in place.
    """

    module: type
    from_module: Callable[[nn.Module], ActivationFn]
    functions: tuple[Callable, ...]
    from_call: Callable[..., tuple[ActivationFn, bool]]
    inplace_functions: tuple[Callable, ...] = ()


def _relu_call(inplace: bool = False) -> tuple[ActivationFn, bool]:
    return torch.relu, inplace


RELU = Activation(nn.ReLU, lambda m: torch.relu, (F.relu, torch.relu, Tensor.relu), _relu_call,
                  (F.relu_, torch.relu_, Tensor.relu_))


@dataclass(frozen=True)
class ActivationRule:
    """A named backward rule for some activations, applied to modules and functional calls."""

    name: str
    backward: Backward
    covers: tuple[Activation, ...] = (RELU,)

    def module_rules(self) -> dict[type, Callable[[nn.Module], nn.Module]]:
        """`rewrite` rules: each covered module type -> its rule module."""
        return {a.module: (lambda m, a=a: RuleActivation(a.from_module(m), self.backward,
                                                         self.name, type(m).__name__))
                for a in self.covers}

    def function_rules(self) -> dict[Callable, Callable[..., Tensor]]:
        """`rewrite` function routes: functional forms of covered activations -> the rule."""
        routes: dict[Callable, Callable[..., Tensor]] = {}
        for a in self.covers:
            for fn in a.functions:
                routes[fn] = self._routed(a, inplace=False)
            for fn in a.inplace_functions:
                routes[fn] = self._routed(a, inplace=True)
        return routes

    def _routed(self, a: Activation, inplace: bool) -> Callable[..., Tensor]:
        def routed(x: Tensor, *args: Any, **kwargs: Any) -> Tensor:
            activation, inplace_arg = a.from_call(*args, **kwargs)
            if not (inplace or inplace_arg):
                return apply_rule(x, activation, self.backward, self.name)
            # in-place semantics: the rule runs on a copy whose result is written back into x
            return x.copy_(apply_rule(x.clone(), activation, self.backward, self.name))

        return routed
