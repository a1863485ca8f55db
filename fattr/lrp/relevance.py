"""Relevance in the gradient slot: one autograd Function for every LRP node.

An LRP model computes its ordinary forward; only the backward of its layers changes. Each
layer runs as `Relevance.apply(x, node, *tensors)`: the forward is `node.op(x, *tensors)`, and
the backward, ON THE RELEVANCE LEVEL, maps the incoming relevance to the layer's input with
`node.rule` (written with `torch.func.vjp` of the layer with modified parameters, in
differentiable ops). So `torch.func.grad` of the target score with respect to x IS the relevance,
and methods that take input gradients (IG, SmoothGrad) work over relevance unchanged.

Why a "relevance level". torch.func runs a custom Function's backward at EVERY nesting level of
`grad`. When an outer `grad` differentiates the relevance with respect to the parameters, the
relevance depends on every layer's saved input, and those depend on the parameters through the
forward pass: that outer derivative must be the TRUE derivative of the forward, not the rule.
So the level of the innermost `grad` transform active when the model is called (the one that
asks for relevance) is recorded on each node; at that level (and any vmap level above it) the
backward is the rule, at every outer level it is the ordinary vector-Jacobian product. A model
called outside torch.func and differentiated by plain autograd (`.backward()` on its output)
gets the rule at every backward, as zennit; differentiate relevance itself with torch.func.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

import torch
import torch._C._functorch as _functorch
from torch import Tensor
from torch._functorch.pyfunctorch import retrieve_current_functorch_interpreter

from fattr.errors import FattrError

Op = Callable[..., Tensor]


class Rule(Protocol):
    """An LRP rule: the input relevance of a layer `z = op(x, *params)` given its output's."""

    def relevance(self, op: Op, x: Tensor, params: Mapping[str, Tensor], r: Tensor) -> Tensor: ...


@dataclass(frozen=True, eq=False)
class Node:
    """What one application of a layer needs in its backward (static, not tensors)."""

    op: Op
    rule: Rule
    level: int | None
    names: tuple[str, ...] = ()
    where: str = "a layer"


def relevance_level() -> int | None:
    """The level of the innermost active `grad`-type transform (None outside torch.func)."""
    stack = _functorch.get_interpreter_stack() or ()
    levels = [i.level() for i in stack if i.key() == _functorch.TransformType.Grad]
    return levels[-1] if levels else None


def _at_relevance_level(level: int | None) -> bool:
    if level is None:
        return True
    current = _functorch.maybe_current_level()
    return current is not None and current >= level


class Relevance(torch.autograd.Function):
    """y = node.op(x, *tensors); dx = node.rule at the relevance level, J^T dy elsewhere."""

    generate_vmap_rule = True

    @staticmethod
    def forward(x: Tensor, node: Node, *tensors: Tensor) -> Tensor:
        with torch._C.DisableTorchFunction():  # the layer itself is not routed again
            return node.op(x, *tensors)

    @staticmethod
    def setup_context(ctx: Any, inputs: tuple, output: Tensor) -> None:
        x, node, *tensors = inputs
        ctx.node = node
        ctx.relevant = _at_relevance_level(node.level)
        ctx.save_for_backward(x, *tensors)

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple:
        x, *tensors = ctx.saved_tensors
        node: Node = ctx.node
        if ctx.relevant:
            r = _untracked(node.level, _rule_relevance, node, x, tensors, grad)
            return (r, None, *(None for _ in tensors))
        _, vjp = torch.func.vjp(node.op, x, *tensors)
        grads = vjp(grad)
        return (grads[0], None, *grads[1:])

    @staticmethod
    def jvp(ctx: Any, *grad_inputs: Any) -> Tensor:
        raise FattrError("lrp: forward-mode AD (jvp, jacfwd) is not defined for relevance "
                         "propagation; use reverse mode (grad, vjp, jacrev).")


def _rule_relevance(node: Node, x: Tensor, tensors: list[Tensor], grad: Tensor) -> Tensor:
    r = node.rule.relevance(node.op, x, dict(zip(node.names, tensors)), grad)
    if r.shape != x.shape:
        raise FattrError(f"lrp: the {type(node.rule).__name__} rule on {node.where} gave "
                         f"relevance of shape {tuple(r.shape)} for an input of shape "
                         f"{tuple(x.shape)}; Pass only fits shape-preserving modules.")
    return r


def _untracked(level: int | None, fn: Callable[..., Tensor], node: Node, x: Tensor,
               tensors: list[Tensor], grad: Tensor) -> Tensor:
    """`fn` computed below the relevance level, so that level records no graph of it.

    torch.func's `grad` runs its backward with create_graph=True, which would keep every
    intermediate of every rule alive until the relevance is returned (a 3x larger peak memory on
    resnet18). Nothing differentiates relevance at its own level, so the rule runs on tensors
    unwrapped from it (outer levels still record it: relevance stays differentiable in the
    parameters) and the result is wrapped back."""
    if level is None or _functorch.maybe_current_level() != level:
        return fn(node, x, tensors, grad)
    down = [_functorch._unwrap_for_grad(t, level) for t in (x, *tensors, grad)]
    with retrieve_current_functorch_interpreter().lower():
        r = fn(node, down[0], down[1:-1], down[-1])
    return _functorch._wrap_for_grad(r, level)


def relevance(x: Tensor, node: Node, *tensors: Tensor) -> Tensor:
    """Apply `node`: its forward, with relevance propagated by its rule on the way back."""
    return Relevance.apply(x, node, *tensors)


class Initial:
    """The output node's rule: initial relevance = the incoming gradient times the output, so
    a target logit's gradient (one-hot) becomes the logit itself, as in zennit and captum."""

    def relevance(self, op: Op, x: Tensor, params: Mapping[str, Tensor], r: Tensor) -> Tensor:
        return x * r


def output_relevance(y: Tensor, level: int | None) -> Tensor:
    """`y` unchanged; on the way back the relevance becomes `y * d score / d y`."""
    return relevance(y, Node(torch.clone, Initial(), level, where="the model output"))
