"""Relevance in the gradient slot: every LRP node is one rule step.

An LRP model computes its ordinary forward; only the backward of its layers changes. Each layer
runs as `relevance(x, node, *tensors)`: the forward is `node.op(x, *tensors)`, and in the
gradient that asks for relevance the backward maps the incoming relevance to the layer's input
with `node.rule` (written with `torch.func.vjp` of the layer with modified parameters, in
differentiable ops). So `torch.func.grad` of the target score with respect to x IS the
relevance, and methods that take input gradients (IG, SmoothGrad) work over relevance unchanged.

Where the rule applies is the mechanism shared with the activation rules,
`fattr.rules.passes`: the rule at the level of the innermost `grad` active when the model is
called (the one that asks for relevance), the true vector-Jacobian product of the layer at outer
levels (a `grad` of relevance w.r.t. the parameters differentiates the forward pass as computed),
and no graph of the rules' intermediates at the relevance level. A model called outside
torch.func and differentiated by plain autograd (`.backward()` on its output) gets the rule at
every backward, as zennit; differentiate relevance itself with torch.func.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Protocol

import torch
from torch import Tensor

from fattr.errors import FattrError
from fattr.rules.passes import rule_step

Op = Callable[..., Tensor]


class Rule(Protocol):
    """An LRP rule: the input relevance of a layer `z = op(x, *params)` given its output's."""

    def relevance(self, op: Op, x: Tensor, params: Mapping[str, Tensor], r: Tensor) -> Tensor: ...


@dataclass(frozen=True, eq=False)
class Node:
    """One application of a layer, as a rule step (`fattr.rules.passes.Step`): the layer
    `op(x, *tensors)` with tensors named `names`, and its LRP rule (static, not tensors)."""

    op: Op
    rule: Rule
    names: tuple[str, ...] = ()
    where: str = "a layer"
    method = "lrp"
    keeps_output = False

    def rule_backward(self, g: Tensor, x: Tensor, y: Tensor | None,
                      tensors: tuple[Tensor, ...]) -> Tensor:
        r = self.rule.relevance(self.op, x, dict(zip(self.names, tensors)), g)
        if r.shape != x.shape:
            raise FattrError(f"lrp: the {type(self.rule).__name__} rule on {self.where} gave "
                             f"relevance of shape {tuple(r.shape)} for an input of shape "
                             f"{tuple(x.shape)}; Pass only fits shape-preserving modules.")
        return r


def relevance(x: Tensor, node: Node, *tensors: Tensor) -> Tensor:
    """Apply `node`: its forward, with relevance propagated by its rule on the way back."""
    return rule_step(x, node, *tensors)


class Initial:
    """The output node's rule: initial relevance = the incoming gradient times the output, so
    a target logit's gradient (one-hot) becomes the logit itself, as in zennit and captum."""

    def relevance(self, op: Op, x: Tensor, params: Mapping[str, Tensor], r: Tensor) -> Tensor:
        return x * r


OUTPUT = Node(torch.clone, Initial(), where="the model output")


def output_relevance(y: Tensor) -> Tensor:
    """`y` unchanged; on the way back the relevance becomes `y * d score / d y`."""
    return relevance(y, OUTPUT)
