"""Single-backward LRP for a model: which composites run in that form, and the module tree.

A composite whose rules all have a Gradient x Input form (Epsilon, Norm, Pass, FrozenStd, None)
and that holds an attention rule (AttnLRP or CPLRP, as `attnlrp` and `cp_lrp` do) runs as one
forward and one backward (`fattr.lrp.modified`): the user's forward runs as written, on a copy
of the module tree, under `fattr.lrp.calls.GradientMode`, so HuggingFace and timm models need no
re-implementation. Rules on modules become scopes of the functional routes or small wrappers:

- AttnLRP / CPLRP on nn.MultiheadAttention: its forward written out (`GradientAttention`); on any
  other module (HuggingFace's LlamaAttention, timm's Attention): the products, softmax and fused
  attention inside it follow that rule;
- FrozenStd on an nn.LayerNorm (and subclasses such as timm's LayerNorm2d): its F.layer_norm
  with a frozen standard deviation; on any other module, and by default on normalizations
  written out (classes named *RMSNorm or *LayerNorm: Llama, Qwen, Gemma, T5): their scale
  calls (rsqrt, sqrt...) are constants;
- Pass on an activation module (torch's, HuggingFace's GELUActivation..., timm's GELU...): the
  identity rule on its whole forward; Pass on BatchNorm: the eval-mode linear map it is (no
  folding needed: its plain backward is the folded layer's);
- Epsilon(e) and Norm(s): stabilizers on the module's linear calls or output; None: the plain
  gradient, nothing inside the module routed.

`first(...)` keys and parameter-modifying rules (ZPlus, Gamma, Flat...) run in the relevance
form (`fattr.lrp.tree`).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

import torch
from torch import Tensor, nn

from fattr.errors import FattrError
from fattr.lrp.attention import AttentionRule, FrozenStd
from fattr.lrp.calls import (
    ACTIVATION_FAMILIES,
    CallRules,
    GradientMode,
    attention_routes,
    layer_norm_routes,
    linear_routes,
    mark_gate,
    norm_routes,
    routes,
)
from fattr.lrp.canonizers import Sum
from fattr.lrp.composites import MISSING, First, choose
from fattr.lrp.layers import BATCHNORMS, normalization_like, parametrized, sigmoid_like
from fattr.lrp.modified import identity_rule, stabilized
from fattr.lrp.rules import Epsilon, Norm, Pass
from fattr.lrp.tree import unrouted
from fattr.rules.rewrite import rewrite, scope, scoped

SINGLE_BACKWARD_RULES = (Epsilon, Norm, Pass, FrozenStd)


def single_backward(composite: Mapping) -> bool:
    """Whether `composite` runs as one forward and one backward (see the module docstring)."""
    if any(isinstance(key, First) for key in composite):
        return False
    rules = [rule for rule in composite.values() if rule is not None]
    return all(type(r) in SINGLE_BACKWARD_RULES or isinstance(r, AttentionRule) for r in rules) \
        and any(isinstance(r, AttentionRule) for r in rules)


def _rule(composite: Mapping, kind: type) -> Any:
    choice = choose(composite, "", kind)
    return None if choice is None or choice.rule is MISSING else choice.rule


def call_rules(composite: Mapping) -> CallRules:
    """The composite's rules for functional calls: those of the module forms (nn.Linear for
    F.linear, nn.GELU for F.gelu...), the attention rule of nn.MultiheadAttention (or the
    composite's first attention rule)."""
    attention = _rule(composite, nn.MultiheadAttention)
    if not isinstance(attention, AttentionRule):
        attention = next((r for r in composite.values() if isinstance(r, AttentionRule)), None)
    linear, total, norm = (_rule(composite, k) for k in (nn.Linear, Sum, nn.LayerNorm))
    return CallRules(
        attention=None if attention is None else type(attention).__name__,
        epsilon=linear.epsilon if isinstance(linear, Epsilon) else 0.0,
        stabilizer=total.stabilizer if isinstance(total, Norm) else 0.0,
        activations=tuple((family, isinstance(_rule(composite, getattr(nn, family)), Pass))
                          for family in ACTIVATION_FAMILIES),
        layer_norm=norm.epsilon if isinstance(norm, FrozenStd) else None)


def _stabilize_output(module: nn.Module, epsilon: float) -> None:
    if epsilon == 0:
        return
    forward = module.forward

    def stabilized_forward(*args: Any, **kwargs: Any) -> Any:
        return stabilized(forward(*args, **kwargs), epsilon)

    module.forward = stabilized_forward


def _normalization(module: nn.Module) -> None:
    """A normalization written out in torch ops: its scale calls are constants for the rule."""
    forward = module.forward

    def normalization_forward(x: Tensor, *args: Any, **kwargs: Any) -> Any:
        dtype = x.dtype if isinstance(x, Tensor) and x.is_floating_point() else torch.float32
        with scope(norm_routes(dtype)):
            return forward(x, *args, **kwargs)

    module.forward = normalization_forward


def _identity_module(module: nn.Module, name: str) -> None:
    """The identity rule on the module's whole forward (an elementwise activation), out of
    place (the rule keeps its input)."""
    if getattr(module, "inplace", None) is True:
        module.inplace = False  # our copy
    sigmoid = sigmoid_like(module)
    params = {k: v for k, v in module._parameters.items() if v is not None}
    op = parametrized(module, {k: v for k, v in module._buffers.items() if v is not None},
                      tuple(params))

    def identity_forward(*args: Any, **kwargs: Any) -> Tensor:
        if len(args) != 1 or kwargs or not isinstance(args[0], Tensor):
            raise FattrError(f"lrp: the composite maps '{name}' ({type(module).__name__}) to "
                             "Pass, an elementwise rule of one input, but the model calls it "
                             f"with {len(args)} positional and {len(kwargs)} keyword arguments.")
        current = [module._parameters[k] for k in params]  # the call's parameters
        return mark_gate(identity_rule(args[0], op, *current), sigmoid)

    module.forward = identity_forward


def _apply(rule: Any, name: str, module: nn.Module, rules: CallRules) -> nn.Module | None:
    """Give `module` (our copy) its rule; a new module, or None to keep it (and descend)."""
    if rule is None:
        return unrouted(module)
    if isinstance(rule, AttentionRule):
        if isinstance(module, nn.MultiheadAttention):
            return rule.gradient_layer(module, name)
        inside = dataclasses.replace(rules, attention=type(rule).__name__)
        scoped(module, attention_routes(inside))
    elif isinstance(rule, FrozenStd):
        if isinstance(module, nn.LayerNorm):
            scoped(module, layer_norm_routes(rule.epsilon))
        else:
            _normalization(module)
            _stabilize_output(module, rule.epsilon)
    elif isinstance(rule, Epsilon):
        if rule.epsilon != rules.epsilon:
            scoped(module, linear_routes(rule.epsilon))
    elif isinstance(rule, Norm):
        _stabilize_output(module, rule.stabilizer)
    elif isinstance(rule, Pass) and not isinstance(module, BATCHNORMS):
        if module._modules:
            raise FattrError(f"lrp: the composite maps '{name}' ({type(module).__name__}), a "
                             "module with submodules, to Pass; Pass is the identity rule of "
                             "elementwise layers.")
        _identity_module(module, name)
    return None


def gradient_tree(module: nn.Module, composite: Mapping) -> nn.Module:
    """The copy of `module` that single-backward LRP runs (see the module docstring)."""
    rules = call_rules(composite)
    norm_rule = _rule(composite, nn.LayerNorm)
    table = routes(rules)

    def match(name: str, node: nn.Module) -> nn.Module | None:
        choice = choose(composite, name, node)
        if choice is not None and choice.rule is not MISSING:
            return _apply(choice.rule, name, node, rules)
        if normalization_like(node) and isinstance(norm_rule, FrozenStd):
            return _apply(norm_rule, name, node, rules)
        return None

    return rewrite(module, match, mode=lambda: GradientMode(table))

