"""Activation rules: the forward unchanged, the backward replaced by a rule.

One generic `autograd.Function` serves every rule: `forward` runs the activation, `backward`
calls the rule's `backward(g, x, y, fn)` written in differentiable torch ops (so double backward
and `torch.func.grad` of an attribution work; never `once_differentiable`), and
`generate_vmap_rule = True` lets `vmap` batch it. Forward-mode AD has no meaning for a modified
backward, so `jvp` raises a clear error. The rule sees the activation `fn` (x -> y, with its
configuration: slope, dim, kernel size) and the whole tensors, so rules that are not local to
one element (RectGrad's per-example percentile, DeepLIFT's pairs of halves) fit as well.

An `ActivationRule` applies such backwards to modules (by `rewrite`) and to functional calls
(`F.relu`, `torch.relu`, `Tensor.relu`, their in-place forms, ...). Its hook formulation
(`rule.hooked()`) expresses a rule with `Tensor.register_hook` instead of a custom Function, for
`torch.compile`, which cannot yet compile custom Functions inside `vmap` (pytorch issue 129845).
"""

from __future__ import annotations

import contextlib
import contextvars
import dataclasses
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from fattr.errors import FattrError

ActivationFn = Callable[[Tensor], Tensor]
Backward = Callable[[Tensor, Tensor, Tensor, ActivationFn], Tensor]
Parse = Callable[..., tuple[ActivationFn, bool]]


class Unsupported(Exception):
    """Raised by `Activation` parsers for a configuration no rule can follow (a reason)."""


class Pass:
    """One attribution's backward pass: rules apply while it is `active`.

    A method computes its modified gradient inside `rule_pass(...)`. Afterwards the same
    autograd nodes may be traversed again, by a derivative OF the attribution (w.r.t. params or
    x, for a training loss): that traversal differentiates the forward values the rules read,
    so the nodes then give the activation's true derivative. Without a pass (a tree from
    `rewrite` used directly), rules always apply and always record their graph.

    `tracked` says whether anything outside may differentiate the attribution (see
    `fattr.core.gradients.may_be_differentiated`). When nothing can, rules run without recording
    a graph: `torch.func.grad` always builds one for double backward, and the rules'
    intermediates would otherwise stay in memory to the end of the pass.
    """

    def __init__(self, tracked: bool):
        self.active, self.tracked = True, tracked

    def rule_grad_mode(self) -> contextlib.AbstractContextManager:
        return contextlib.nullcontext() if self.tracked else torch.no_grad()


_PASS: contextvars.ContextVar[Pass | None] = contextvars.ContextVar("fattr_rule_pass",
                                                                   default=None)


@contextlib.contextmanager
def rule_pass(tracked: bool = True) -> Iterator[None]:
    """Rules apply to the backward passes started inside, and to no later traversal.

    `tracked=False` (nothing outside can differentiate the result, see `Pass`) lets the rules
    skip recording their graph.
    """
    current = Pass(tracked)
    token = _PASS.set(current)
    try:
        yield
    finally:
        current.active = False
        _PASS.reset(token)


def _run_rule(during: Pass | None, backward: Backward, g: Tensor, x: Tensor, y: Tensor,
              fn: ActivationFn) -> Tensor:
    if during is None:
        return backward(g, x, y, fn)
    if not during.active:
        return true_backward(g, x, fn)
    with during.rule_grad_mode():
        return backward(g, x, y, fn)


def true_backward(g: Tensor, x: Tensor, fn: ActivationFn) -> Tensor:
    """The activation's own vector-Jacobian product."""
    return torch.func.vjp(fn, x)[1](g)[0]


class RuleFunction(torch.autograd.Function):
    """y = fn(x); dx = backward(dy, x, y, fn) during the attribution's pass (see `Pass`).

    The rule may use x and y in differentiable ops: a derivative of the attribution reaches
    them after the pass, when this node and every other one give true derivatives.
    """

    generate_vmap_rule = True

    @staticmethod
    def forward(x: Tensor, fn: ActivationFn, backward: Backward, name: str,
                during: Pass | None) -> Tensor:
        with torch._C.DisableTorchFunction():  # the activation itself is not routed again
            return fn(x)

    @staticmethod
    def setup_context(ctx: Any, inputs: tuple, output: Tensor) -> None:
        x, fn, backward, name, during = inputs
        ctx.save_for_backward(x, output)
        ctx.fn, ctx.rule_backward, ctx.rule_name, ctx.during = fn, backward, name, during

    @staticmethod
    def backward(ctx: Any, grad_output: Tensor) -> tuple:
        x, y = ctx.saved_tensors
        return _run_rule(ctx.during, ctx.rule_backward, grad_output, x, y, ctx.fn), \
            None, None, None, None

    @staticmethod
    def jvp(ctx: Any, *grad_inputs: Any) -> Tensor:
        raise FattrError(f"{ctx.rule_name}: forward-mode AD (jvp, jacfwd) is not defined for a "
                         "modified backward rule; use reverse mode (grad, vjp, jacrev).")


def keep_where_positive(g: Tensor, v: Tensor) -> Tensor:
    """g where v > 0, else 0: ReLU's own backward kernel (`threshold_backward`), several times
    faster on CPU than a boolean mask or `torch.where`, batched by vmap and differentiable in g."""
    return torch.ops.aten.threshold_backward(g, v, 0)


def apply_rule(x: Tensor, fn: ActivationFn, backward: Backward, name: str) -> Tensor:
    """fn(x) whose backward follows `backward`, as a custom Function."""
    return RuleFunction.apply(x, fn, backward, name, _PASS.get())


def apply_hooked(x: Tensor, fn: ActivationFn, backward: Backward, name: str) -> Tensor:
    """fn(x) whose backward follows `backward`, as a tensor hook (compiles under torch.compile).

    The value is fn(x); the gradient reaching it goes through `backward` in the hook and then
    straight to x (the activation's own derivative is bypassed by `y.detach() + (x - x.detach())`).
    The forward value is therefore constant for outer derivatives, which is exact for rules whose
    backward uses the forward pass only through masks (guided, deconvnet, rectgrad).
    """
    with torch._C.DisableTorchFunction():
        y = fn(x)
    if not x.requires_grad:
        return y
    out = y.detach() + (x - x.detach())
    during = _PASS.get()
    if during is not None:  # hooks stay rules: the identity forward has no true derivative
        during = Pass(during.tracked)
    out.register_hook(lambda g: _run_rule(during, backward, g, x, y, fn))
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
