"""Single-backward LRP: rules that change the gradient itself, so one forward and one backward
give the relevance (the Gradient x Input form of AttnLRP, as lxt's "efficient" rules).

For rules of the form R_x = x * Jmod^T (R_y / y) (Epsilon with eps = 0 on linear maps, the
identity rule on elementwise activations, the uniform rule on products, frozen normalizations),
relevance is the input times a modified gradient, R = x * g. So instead of handing relevance
down and re-evaluating each layer in a vector-Jacobian product, the gradient slot carries g:
linear maps keep their plain backward, and only a few nodes change it, each by a closed form of
values saved in the forward pass (no second evaluation of any layer):

    frozen(t)             g_t = 0                       (a constant for the rule: CP-LRP's
                                                          attention weights, a norm's 1/std)
    scaled(t, c)          g_t = c * g                   (the uniform rule: c = 1 / #factors)
    identity_rule(x, fn)  g_x = g * fn(x) / x           (elementwise activations: R_x = R_y)
    stabilized(y, eps)    g_y = g * y / (y + eps sign y)  (Epsilon's stabilizer, eps > 0)
    times_input(x)        g_x = x * g                   (at the input: the relevance itself)

Each node applies its rule only in the gradient that asks for relevance and is the identity (or
the layer's true derivative) at every outer level, through `fattr.rules.passes` (custom Function
steps) or, for `frozen`, by re-wrapping the tensor as a constant at the rule level only, which
costs nothing: a derivative of the relevance with respect to the parameters stays exact. Under
plain autograd with no torch.func transform active (the fast path of `fattr.lrp`, when nothing
can differentiate the relevance) each node is a minimal autograd Function instead: a third of
the Python cost per node.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
import torch._C._functorch as _functorch
import torch.nn.functional as F
from torch import Tensor, nn

from fattr.lrp.rules import stabilize
from fattr.rules.passes import rule_level, rule_step


def depends(t: object, level: int | None) -> bool:
    """Whether `t` is a floating tensor that depends on the input for the rule at the rule
    level `level` (under torch.func: tracked at that level; under plain autograd: requires grad
    and is not a parameter). A `frozen` tensor and everything computed from it alone do not."""
    if not isinstance(t, Tensor) or not t.is_floating_point() or not t.requires_grad:
        return False
    if level is None:
        return not isinstance(t, nn.Parameter)
    return _functorch.is_gradtrackingtensor(t) and _functorch.maybe_get_level(t) >= level


def _alias(x: Tensor) -> Tensor:
    return x.view_as(x)


def _plain() -> bool:
    """No torch.func transform is active: the relevance is taken by plain autograd and nothing
    differentiates it (the rule applies at every backward, as in `fattr.rules.passes`)."""
    return not _functorch.get_interpreter_stack()


class _Scale(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, x: Tensor, factor: float) -> Tensor:
        ctx.factor = factor
        return x.view_as(x)

    @staticmethod
    def backward(ctx: Any, g: Tensor) -> tuple:
        return g * ctx.factor, None


class _Identity(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, x: Tensor, fn: Callable[[Tensor], Tensor]) -> Tensor:
        with torch._C.DisableTorchFunction():  # the layer itself is not routed again
            y = fn(x)
        ctx.save_for_backward(x, y)
        return y

    @staticmethod
    def backward(ctx: Any, g: Tensor) -> tuple:
        x, y = ctx.saved_tensors
        return _ratio(g, x, y), None


class _TimesInput(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, x: Tensor) -> Tensor:
        ctx.save_for_backward(x)
        return x.view_as(x)

    @staticmethod
    def backward(ctx: Any, g: Tensor) -> Tensor:
        return ctx.saved_tensors[0] * g


class _FrozenLayerNorm(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, x: Tensor, shape: tuple[int, ...], weight: Tensor | None,
                bias: Tensor | None, eps: float) -> Tensor:
        with torch._C.DisableTorchFunction():
            y, _, rstd = torch.native_layer_norm(x, list(shape), weight, bias, eps)
        ctx.save_for_backward(rstd, weight)
        ctx.dims = tuple(range(-len(shape), 0))
        return y

    @staticmethod
    def backward(ctx: Any, g: Tensor) -> tuple:
        rstd, weight = ctx.saved_tensors
        h = g if weight is None else g * weight
        return rstd * (h - h.mean(ctx.dims, keepdim=True)), None, None, None, None


@dataclass(frozen=True, eq=False)
class Modify:
    """A gradient-modifying node: y = op(x, *tensors), g_x = rule(g, x, y) at the rule level
    (the tensors, a layer's parameters, get their true derivative at outer levels)."""

    op: Callable[..., Tensor]
    rule: Callable[[Tensor, Tensor, Tensor | None], Tensor]
    keeps_output: bool = False
    method = "lrp"

    def rule_backward(self, g: Tensor, x: Tensor, y: Tensor | None,
                      tensors: tuple[Tensor, ...]) -> Tensor:
        return self.rule(g, x, y)


def _zero(g: Tensor, x: Tensor, y: Tensor | None) -> Tensor:
    return torch.zeros_like(g)


FREEZE = Modify(_alias, _zero)


def frozen(t: Tensor) -> Tensor:
    """`t`, a constant for the rule (zero gradient at the rule level, exact at outer levels)."""
    level = rule_level()
    if not depends(t, level):
        return t
    if level is None:
        return t.detach()
    if _functorch.maybe_get_level(t) == level:  # a new wrapper without history at this level
        return _functorch._wrap_for_grad(_functorch._unwrap_for_grad(t, level), level)
    return rule_step(t, FREEZE)  # wrapped by a transform inside the rule level


@dataclass(frozen=True)
class _Times:
    factor: float

    def __call__(self, g: Tensor, x: Tensor, y: Tensor | None) -> Tensor:
        return g * self.factor


def scaled(t: Tensor, factor: float) -> Tensor:
    """`t` whose gradient is multiplied by `factor` (the uniform rule for products)."""
    if factor == 1 or not depends(t, rule_level()):
        return t
    if _plain():
        return _Scale.apply(t, factor)
    return rule_step(t, Modify(_alias, _Times(factor)))


def nonzero(x: Tensor) -> Tensor:
    """x with exact zeros replaced by one: y / nonzero(x) is 0 where an activation's x and y
    are both zero (LRP-0's 0 / 0 = 0), the relevance-form convention."""
    return torch.where(x == 0, 1.0, x).to(x.dtype)


def _ratio(g: Tensor, x: Tensor, y: Tensor | None) -> Tensor:
    return g * y / nonzero(x)


def identity_rule(x: Tensor, fn: Callable[..., Tensor], *tensors: Tensor) -> Tensor:
    """fn(x, *tensors) for an elementwise activation (`tensors`: its parameters, as PReLU's),
    with gradient g * fn(x) / x at the rule level: the identity rule R_x = R_y (AttnLRP Eq. 9)
    in Gradient x Input form."""
    if not depends(x, rule_level()):
        return fn(x, *tensors)
    if _plain():
        return _Identity.apply(x, lambda t: fn(t, *tensors))
    return rule_step(x, Modify(fn, _ratio, keeps_output=True), *tensors)


@dataclass(frozen=True)
class _Stabilizer:
    epsilon: float

    def __call__(self, g: Tensor, x: Tensor, y: Tensor | None) -> Tensor:
        return g * x / stabilize(x, self.epsilon)


def stabilized(y: Tensor, epsilon: float) -> Tensor:
    """`y` (a layer's output) with Epsilon's stabilizer on its gradient: g * y / stab(y), so
    that R_x = x * J^T (R_y / stab(y)) for the layer before it. No node when epsilon is 0."""
    if epsilon == 0 or not depends(y, rule_level()):
        return y
    return rule_step(y, Modify(_alias, _Stabilizer(epsilon)))


def _times_input(g: Tensor, x: Tensor, y: Tensor | None) -> Tensor:
    return x * g


TIMES_INPUT = Modify(_alias, _times_input)


def times_input(x: Tensor) -> Tensor:
    """`x` whose gradient is multiplied by x: at the model input, the modified gradient becomes
    the relevance R = x * g."""
    if _plain():
        return _TimesInput.apply(x)
    return rule_step(x, TIMES_INPUT)


@dataclass(frozen=True, eq=False)
class FrozenLayerNorm:
    """F.layer_norm with its standard deviation a constant of the rule (AttnLRP's identity rule
    on the normalization): g_x = rstd * (h - mean(h)), h = w * g over the normalized axes. (The
    rule computes rstd from x again, one reduction: as a saved output of the forward it would
    have no derivative at outer levels.)"""

    shape: tuple[int, ...]
    eps: float
    weight: bool
    bias: bool
    method = "lrp"
    keeps_output = False

    def op(self, x: Tensor, *tensors: Tensor) -> Tensor:
        weight = tensors[0] if self.weight else None
        bias = tensors[-1] if self.bias else None
        return F.layer_norm(x, self.shape, weight, bias, self.eps)

    def rule_backward(self, g: Tensor, x: Tensor, y: Tensor | None,
                      tensors: tuple[Tensor, ...]) -> Tensor:
        dims = tuple(range(-len(self.shape), 0))
        rstd = x.var(dims, unbiased=False, keepdim=True).add(self.eps).rsqrt()
        h = g * tensors[0] if self.weight else g
        return rstd * (h - h.mean(dims, keepdim=True))


def frozen_layer_norm(x: Tensor, shape: tuple[int, ...], weight: Tensor | None,
                      bias: Tensor | None, eps: float) -> Tensor:
    """`F.layer_norm(x, shape, weight, bias, eps)` with a frozen standard deviation."""
    if _plain():
        return _FrozenLayerNorm.apply(x, tuple(shape), weight, bias, float(eps))
    tensors = tuple(t for t in (weight, bias) if t is not None)
    node = FrozenLayerNorm(tuple(shape), float(eps), weight is not None, bias is not None)
    return rule_step(x, node, *tensors)
