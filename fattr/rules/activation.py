"""Activation rules: the forward unchanged, the backward replaced by a rule.

Every rule runs as one step of `fattr.rules.passes.RuleStep`, the custom Function shared with
LRP: the forward runs the activation; in the attribution's own gradient the backward calls the
rule's `backward(g, x, y, fn)`, written in differentiable torch ops (never `once_differentiable`),
and any derivative OF the attribution sees the activation's true derivative (`passes` says how,
and how the rule keeps no graph nobody can use). The rule sees the activation `fn` (x -> y, with
its configuration: slope, dim, kernel size) and the whole tensors, so rules that are not local
to one element (RectGrad's per-example percentile, DeepLIFT's pairs of halves) fit as well.

An `ActivationRule` applies such backwards to modules (by `rewrite`) and to functional calls
(`F.relu`, `torch.relu`, `Tensor.relu`, their in-place forms, ...). Its hook formulation
(`rule.hooked()`) expresses a rule with `Tensor.register_hook` instead of a custom Function, for
`torch.compile`, which cannot yet compile custom Functions inside `vmap` (pytorch issue 129845).
"""

from __future__ import annotations

import contextlib
import contextvars
import dataclasses
import functools
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from fattr.errors import FattrError
from fattr.rules.passes import below, rule_level, rule_step

ActivationFn = Callable[[Tensor], Tensor]
Backward = Callable[[Tensor, Tensor, Tensor, ActivationFn], Tensor]
Parse = Callable[..., tuple[ActivationFn, bool]]


class Unsupported(Exception):
    """Raised by `Activation` parsers for a configuration no rule can follow (a reason)."""


@dataclass(frozen=True, eq=False)
class ActivationStep:
    """An activation as a rule step (`fattr.rules.passes`): y = fn(x), dx = backward(g, x, y, fn).

    The rule may use x and y in differentiable ops: a derivative of the attribution reaches them
    through the nodes of outer levels, which give the activation's true derivative."""

    op: ActivationFn
    backward: Backward
    method: str
    keeps_output = True

    def rule_backward(self, g: Tensor, x: Tensor, y: Tensor | None,
                      tensors: tuple[Tensor, ...]) -> Tensor:
        return self.backward(g, x, y, self.op)


def keep_where_positive(g: Tensor, v: Tensor) -> Tensor:
    """g where v > 0, else 0: ReLU's own backward kernel (`threshold_backward`), several times
    faster on CPU than a boolean mask or `torch.where`, batched by vmap and differentiable in g."""
    return torch.ops.aten.threshold_backward(g, v, 0)


def reads_indices(backward: Backward) -> Backward:
    """Marks a max-pooling rule that reads the forward pass's argmax indices: `fn` then runs with
    `return_indices=True` and the rule gets y = (values, indices), so it needs no second pooling
    to route gradients. `backward` is marked in place (a function or a `functools.partial`)."""
    backward.reads_indices = True  # type: ignore[attr-defined]
    return backward


_APPLIED: contextvars.ContextVar[list[int] | None] = contextvars.ContextVar("fattr_rules_applied",
                                                                          default=None)


@contextlib.contextmanager
def counting() -> Iterator[list[int]]:
    """Counts the rule applications in its body (one element: the count)."""
    count = [0]
    token = _APPLIED.set(count)
    try:
        yield count
    finally:
        _APPLIED.reset(token)


def _applied() -> None:
    count = _APPLIED.get()
    if count is not None:
        count[0] += 1


def apply_rule(x: Tensor, fn: ActivationFn, backward: Backward, name: str) -> Tensor:
    """fn(x) whose backward follows `backward`, as a custom Function (`passes.RuleStep`)."""
    _applied()
    if getattr(backward, "reads_indices", False):
        fn = functools.partial(fn, return_indices=True)
    return rule_step(x, ActivationStep(fn, backward, name))


def apply_hooked(x: Tensor, fn: ActivationFn, backward: Backward, name: str) -> Tensor:
    """fn(x) whose backward follows `backward`, as a tensor hook (compiles under torch.compile).

    The value is fn(x); the gradient reaching it goes through `backward` in the hook and then
    straight to x (the activation's own derivative is bypassed by `y.detach() + (x - x.detach())`).
    A hook has no node that could give the true derivative: it applies the rule wherever it fires
    (only in the gradient of the level it was registered at, see `fattr.rules.passes`), and
    outer derivatives see the activation with slope 1. That is exact for rules whose backward
    reads the forward pass only through masks (guided, deconvnet, rectgrad): no derivative of
    the attribution reaches the forward values.
    """
    _applied()
    with torch._C.DisableTorchFunction():
        y = fn(x)
    if not x.requires_grad:
        return y
    out = y.detach() + (x - x.detach())
    level = rule_level()  # the hook fires at this level only; it has no true derivative to give
    out.register_hook(lambda g: below(level, lambda *t: backward(*t, fn), g, x, y))
    return out


class RuleActivation(nn.Module):
    """An activation module whose backward follows a rule (what `rewrite` swaps in)."""

    def __init__(self, fn: ActivationFn, backward: Backward, name: str, replaced: str,
                 apply: Callable[..., Tensor] = apply_rule):
        super().__init__()
        self.fn, self.backward, self.rule_name, self.replaced = fn, backward, name, replaced
        self.apply_fn = apply

    def forward(self, x: Tensor) -> Tensor:
        return self.apply_fn(x, self.fn, self.backward, self.rule_name)

    def extra_repr(self) -> str:
        how = "hook" if self.apply_fn is apply_hooked else "function"
        return f"{self.rule_name} rule for {self.replaced} ({how})"


@dataclass(frozen=True, eq=False)
class Activation:
    """How to recognise one activation and rebuild it as a plain function of x.

    `modules`: the module types. `from_module(m)` gives the activation as `x -> y` (raising a
    `FattrError` for a configuration no rule can follow). `calls` maps each functional form (as
    a `TorchFunctionMode` sees it) to a parser of the call's arguments after x that returns the
    activation and whether the call was in place. `slope(x, y, fn)`, for elementwise
    activations, is the derivative in closed form (else `derivative` takes a vjp).
    """

    name: str
    modules: tuple[type, ...]
    from_module: Callable[[nn.Module], ActivationFn]
    calls: Mapping[Callable, Parse]
    slope: Callable[[Tensor, Tensor, ActivationFn], Tensor] | None = None

    def derivative(self, x: Tensor, y: Tensor, fn: ActivationFn) -> Tensor:
        """dy/dx of an elementwise activation at x (y = fn(x)), as its own backward computes it."""
        if self.slope is not None:
            return self.slope(x, y, fn)
        return torch.func.vjp(fn, x)[1](torch.ones_like(x))[0]


@dataclass(frozen=True, eq=False)
class ActivationRule:
    """A named backward rule for some activations, applied to modules and functional calls.

    `backward(g, x, y, fn)` is the rule; `special` overrides it for particular activations
    (DeepLIFT's max pooling and softmax). Calling the rule on a module, as in
    `fattr.rewrite(model, {nn.ReLU: rule})`, gives its rule module, or a `FattrError` for an
    activation the rule does not cover.
    """

    name: str
    backward: Backward
    covers: tuple[Activation, ...]
    special: tuple[tuple[Activation, Backward], ...] = ()
    hook: bool = False

    def hooked(self) -> ActivationRule:
        """The same rule as tensor hooks instead of a custom Function (for torch.compile)."""
        return dataclasses.replace(self, hook=True)

    @property
    def _apply(self) -> Callable[..., Tensor]:
        return apply_hooked if self.hook else apply_rule

    def backward_for(self, activation: Activation) -> Backward:
        return dict((a.name, b) for a, b in self.special).get(activation.name, self.backward)

    def __call__(self, module: nn.Module) -> nn.Module:
        for a in self.covers:
            if isinstance(module, a.modules):
                return self._module(a, module)
        covered = ", ".join(a.name for a in self.covers)
        raise FattrError(f"{self.name}: this rule has no backward for {type(module).__name__}; "
                         f"it covers {covered}. Map only those module types to it.")

    def _module(self, a: Activation, module: nn.Module) -> nn.Module:
        try:
            fn = a.from_module(module)
        except Unsupported as reason:
            raise FattrError(f"{self.name}: the model's {module!r} has no rule: {reason}") from None
        return RuleActivation(fn, self.backward_for(a), self.name, type(module).__name__,
                              self._apply)

    def module_rules(self) -> dict[tuple[type, ...], Callable[[nn.Module], nn.Module]]:
        """`rewrite` rules: each covered module type -> its rule module."""
        return {a.modules: (lambda m, a=a: self._module(a, m)) for a in self.covers}

    def function_rules(self) -> dict[Callable, Callable[..., Tensor]]:
        """`rewrite` function routes: functional forms of covered activations -> the rule."""
        return {fn: self._routed(a, parse) for a in self.covers for fn, parse in a.calls.items()}

    def _routed(self, a: Activation, parse: Parse) -> Callable[..., Tensor]:
        backward, apply, name = self.backward_for(a), self._apply, self.name

        def routed(x: Tensor, *args: Any, **kwargs: Any) -> Tensor:
            try:
                fn, inplace = parse(*args, **kwargs)
            except Unsupported as reason:
                raise FattrError(f"{name}: the model calls {a.name} functionally in a way that "
                                 f"has no rule: {reason}") from None
            if not inplace:
                return apply(x, fn, backward, name)
            # in-place semantics: the rule runs on a copy whose result is written back into x
            return x.copy_(apply(x.clone(), fn, backward, name))

        return routed
