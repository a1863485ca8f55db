"""The LRP model's module tree: canonizers and a composite applied to a copy, in one rewrite.

Every module a composite gives a rule becomes a `RelevanceLayer` (it keeps the module's tensors
under their names, so the tree is called with the user's params); functional calls in the
forward get the rule of their module form (`F.relu`, `x.relu_()`... that of `nn.ReLU`, parsed by
the activation catalog of `fattr.rules.nonlinearities`; a tensor addition that of `Sum`;
`mean`/`sum`/functional average pooling that of average pooling; `x * c`, `x / c` for a c
that does not depend on the input, or a gate (squeeze-and-excitation), Pass, the Epsilon
relevance of a one-input linear map); calls that only move, copy or select values pass; any
other call on the input's values (matmul, softmax, products of two tensors, functional layers,
activations the catalog does not parse) and leaves with parameters but no rule raise an error
that names them, instead of a silent plain gradient. Composites with an attention rule run in
the single-backward form instead (`fattr.lrp.efficient`).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.modules.batchnorm import _BatchNorm

from fattr.errors import FattrError
from fattr.lrp.attention import RULE_LAYERS
from fattr.lrp.calls import STRUCTURAL, StatefulMode, checked, mark_gate, which_gate
from fattr.lrp.canonizers import (
    MergedBatchNorm,
    MergedLinear,
    Sum,
    canonical,
    fold,
    keep_children,
    link,
    run_children,
)
from fattr.lrp.composites import MISSING, Choice, First, choose
from fattr.lrp.layers import (
    BATCHNORMS,
    LINEAR_LAYERS,
    affine,
    parametrized,
    plain_types,
    sigmoid_like,
)
from fattr.lrp.modified import depends
from fattr.lrp.relevance import Node, Op, relevance
from fattr.lrp.rules import Pass
from fattr.rules.activation import Activation
from fattr.rules.nonlinearities import ELU, GELU, LEAKY_RELU, RELU, SIGMOID, SILU, SOFTPLUS, TANH
from fattr.rules.passes import rule_level
from fattr.rules.rewrite import RuleModule, call_name, rewrite, scope_routes


class Gradient:
    """The plain vector-Jacobian product (what `None` in a composite means for a layer that
    competes for `first(...)`)."""

    def relevance(self, op: Op, x: Tensor, params: Mapping[str, Tensor], r: Tensor) -> Tensor:
        return torch.func.vjp(lambda i: op(i, *params.values()), x)[1](r)[0]


class FirstClaim:
    """Which module ran first among those competing for one `first(...)` key (per call)."""

    def __init__(self) -> None:
        self.owner: nn.Module | None = None

    def take(self, module: nn.Module) -> bool:
        if self.owner is None:
            self.owner = module
        return self.owner is module


class RelevanceLayer(RuleModule):
    """A leaf module (or a folded conv + BatchNorm) whose backward follows an LRP rule."""

    def __init__(self, node: nn.Module, name: str, choice: Choice,
                 claims: dict[First, FirstClaim]):
        super().__init__(node)
        claim = None if choice.first_key is None else \
            claims.setdefault(choice.first_key, FirstClaim())
        self.__dict__.update(  # plain attributes (faster than nn.Module.__setattr__)
            name=name, choice=choice, claim=claim,
            bn_path=node.bn_path if isinstance(node, MergedLinear) else None,
            bn=None)  # the MergedBatchNorm, set by `link`
        keep_children(self, node)

    @property
    def kind(self) -> nn.Module:
        """The layer the rule sees (a folded conv's conv)."""
        return self.layer.layer if isinstance(self.layer, MergedLinear) else self.layer

    def rule(self) -> Any:
        rule = self.choice.rule
        if self.claim is not None and self.claim.take(self):
            rule = self.choice.first_rule
        elif rule is MISSING:
            raise FattrError(f"lrp: '{self.name}' ({type(self.kind).__name__}) matches only a "
                             "first(...) key of the composite and is not the first layer; add a "
                             "rule for the other layers of its type.")
        return Gradient() if rule is None else rule

    def parts(self) -> tuple[Op, tuple[str, ...], tuple[Tensor, ...]]:
        """The layer as `op(x, *tensors)`, its parameter names, and this call's tensors."""
        if isinstance(self.layer, MergedLinear):
            merged = fold(self.kind, self.layer_tensors(), self.bn.layer, self.bn.layer_tensors())
            return affine(self.kind), ("weight", "bias"), merged
        params = {k: v for k, v in self._parameters.items() if v is not None}
        if isinstance(self.kind, LINEAR_LAYERS):
            return affine(self.kind), tuple(params), tuple(params.values())
        buffers = {k: v for k, v in self._buffers.items() if v is not None}
        if isinstance(self.kind, BATCHNORMS):  # the normalization only, without kept children
            op = parametrized(self.kind, buffers, tuple(params), _BatchNorm.forward)
        elif not params and not buffers:
            op = self.kind.forward
        else:
            op = parametrized(self.kind, buffers, tuple(params))
        return op, tuple(params), tuple(params.values())

    def forward(self, *args: Any, **kwargs: Any) -> Tensor:
        if len(args) != 1 or kwargs or not isinstance(args[0], Tensor):
            given = len(args) + len(kwargs)
            raise FattrError(f"lrp: the composite maps '{self.name}' ({type(self.kind).__name__}) "
                             f"to {type(self.choice.rule).__name__}, a rule for layers of one "
                             f"input tensor, but the model calls it with {given} arguments. Map "
                             "the module to None (its plain gradient), or map its submodules.")
        x = args[0]
        rule = self.rule()
        with torch._C.DisableTorchFunction():
            op, names, tensors = self.parts()
        where = f"'{self.name}' ({type(self.kind).__name__})"
        y = relevance(x, Node(op, rule, names, where), *tensors)
        if self.bn is not None:
            self.bn.expect(y)
        if sigmoid_like(self.kind):
            mark_gate(y, sigmoid=True)
        return run_children(self, y)

    def extra_repr(self) -> str:
        return f"{type(self.kind).__name__}, {self.choice}"


# Functional activations: the rules' catalog parses their calls (in-place forms included).
CATALOG = (RELU, LEAKY_RELU, ELU, SIGMOID, TANH, SOFTPLUS, GELU, SILU)
ADDITIONS = (torch.add, Tensor.add, Tensor.add_)
REDUCTIONS = (torch.sum, Tensor.sum, torch.mean, Tensor.mean, F.avg_pool1d, F.avg_pool2d,
              F.avg_pool3d, F.adaptive_avg_pool1d, F.adaptive_avg_pool2d, F.adaptive_avg_pool3d)
SCALINGS = (torch.mul, Tensor.mul, Tensor.mul_, torch.div, Tensor.div, Tensor.div_)
ATTENTION_CALLS = frozenset((torch.matmul, Tensor.matmul, torch.mm, Tensor.mm, torch.bmm,
                             Tensor.bmm, torch.einsum, torch.softmax, Tensor.softmax, F.softmax,
                             F.scaled_dot_product_attention, F.multi_head_attention_forward))
REFUSED = {fn: "lrp" for fn in (
    torch.matmul, Tensor.matmul, torch.mm, Tensor.mm, torch.bmm, Tensor.bmm, torch.einsum,
    torch.softmax, Tensor.softmax, F.softmax, F.log_softmax, Tensor.log_softmax, F.linear,
    F.bilinear, F.conv1d, F.conv2d, F.conv3d, F.conv_transpose1d, F.conv_transpose2d,
    F.conv_transpose3d, F.layer_norm, F.group_norm, F.batch_norm, F.instance_norm,
    F.scaled_dot_product_attention, F.multi_head_attention_forward,
    # functional activations the catalog does not parse: their module forms have rules
    F.relu6, F.hardtanh, F.hardtanh_, F.hardswish, F.hardsigmoid, F.mish, F.selu, torch.selu,
    F.celu, F.logsigmoid, F.softsign, F.rrelu, F.threshold)}


def _activation(activation: Activation, parse: Callable, rule: Any) -> Callable[..., Tensor]:
    """A functional activation call as an LRP node; an in-place call writes the result back."""

    def routed(x: Tensor, *args: Any, **kwargs: Any) -> Tensor:
        fn, inplace = parse(*args, **kwargs)
        node = Node(fn, rule, where=f"a {activation.name} call")
        y = x.copy_(relevance(x.clone(), node)) if inplace else relevance(x, node)
        return mark_gate(y, sigmoid=True) if activation is SIGMOID else y

    return routed


def _reduction(fn: Callable, rule: Any) -> Callable[..., Tensor]:
    """`x.sum(...)`/`x.mean(...)` as an LRP node (the rule of average pooling)."""

    def routed(x: Tensor, *args: Any, **kwargs: Any) -> Tensor:
        if not x.is_floating_point():
            return fn(x, *args, **kwargs)
        op = lambda t: fn(t, *args, **kwargs)
        return relevance(x, Node(op, rule, where=f"a {fn.__name__} call"))

    return routed


def _sum_last(x: Tensor) -> Tensor:
    return x.sum(-1)


def _addition(fn: Callable, rule: Any) -> Callable[..., Tensor]:
    """a + b of two tensors as a `Sum` node over the stacked (broadcast) operands."""
    node = Node(_sum_last, rule, where="a tensor addition")

    def routed(a: Tensor, b: Any, *args: Any, **kwargs: Any) -> Any:
        if args or kwargs or not isinstance(b, Tensor) or b.dtype != a.dtype or b.numel() < 2 \
                or not a.is_floating_point():
            return fn(a, b, *args, **kwargs)
        total = relevance(torch.stack(torch.broadcast_tensors(a, b), -1), node)
        return a.copy_(total) if fn is Tensor.add_ else total

    return routed


_OUT_OF_PLACE = {Tensor.mul_: torch.mul, Tensor.div_: torch.div}


def _scaling(fn: Callable) -> Callable[..., Tensor]:
    """x * c and x / c for a c that does not depend on the input (a number, a learned scale, a
    buffer): a one-input linear map, whose Epsilon relevance is the relevance itself (Pass); the
    plain gradient would scale relevance by c. A gate that depends on the input (the factor
    that broadcasts to x's shape, else a sigmoid's output: squeeze-and-excitation's
    x * sigmoid(...)) is a constant for the rule, as CP-LRP treats attention weights: all
    relevance goes to x. Other products of two such tensors (attention, gated MLPs) have no rule
    here: refused."""
    op = _OUT_OF_PLACE.get(fn, fn)
    node = Node(op, Pass(), where=f"a {op.__name__} by a constant")

    def routed(a: Any, b: Any, *args: Any, **kwargs: Any) -> Any:
        if not isinstance(a, Tensor) or not a.is_floating_point() or args or kwargs:
            return fn(a, b, *args, **kwargs)
        level = rule_level()
        if not depends(a, level):
            if op in _MULTIPLY and isinstance(b, Tensor) and depends(b, level):
                return routed(b, a)  # c * x
            return fn(a, b)
        if isinstance(b, Tensor) and depends(b, level) and \
                (gate := which_gate(a, b) if op in _MULTIPLY else None) != 1:
            if gate == 0:
                return routed(b, a)  # gate * x
            raise FattrError(
                "lrp: the model multiplies or divides two tensors of one shape that both depend "
                "on the input (gating, attention), which LRP has no rule for in fattr's "
                "relevance-form composites. Use the 'attnlrp' or 'cp_lrp' composite (their "
                "uniform rule), a gradient method, or write the operation as a module and map "
                "it to a rule in a custom composite.")
        constant = b if isinstance(b, Tensor) else torch.as_tensor(b, dtype=a.dtype,
                                                                    device=a.device)
        if constant.ndim > a.ndim or torch.broadcast_shapes(a.shape, constant.shape) != a.shape:
            return fn(a, b)
        scaled = relevance(a.clone() if fn in _OUT_OF_PLACE else a, node, constant)
        return a.copy_(scaled) if fn in _OUT_OF_PLACE else scaled

    return routed


_MULTIPLY = (torch.mul, Tensor.mul)


def routes(composite: Mapping) -> dict[Callable, Callable]:
    """Functional calls in the forward -> the rule their module form gets in `composite`."""
    table: dict[Callable, Callable] = {fn: _scaling(fn) for fn in SCALINGS}
    for activation in CATALOG:
        choice = choose(composite, "", activation.modules[0])
        if choice is not None and choice.rule not in (None, MISSING):
            table.update({call: _activation(activation, parse, choice.rule)
                          for call, parse in activation.calls.items()})
    sums = choose(composite, "", Sum)
    if sums is not None and sums.rule not in (None, MISSING):
        table.update({fn: _addition(fn, sums.rule) for fn in ADDITIONS})
    pools = choose(composite, "", nn.AdaptiveAvgPool2d)
    if pools is not None and pools.rule not in (None, MISSING):
        table.update({fn: _reduction(fn, pools.rule) for fn in REDUCTIONS})
    return table


def unrouted(module: nn.Module) -> nn.Module:
    """Run `module` (our copy) without routing: the user asked for its plain gradient."""
    forward = module.forward

    def plain_forward(*args: Any, **kwargs: Any) -> Any:
        with torch._C.DisableTorchFunction():
            return forward(*args, **kwargs)

    module.forward = plain_forward
    return module


def relevance_tree(module: nn.Module, composite: Mapping, canonize: bool = True) -> nn.Module:
    """The LRP copy of `module`: canonized, each layer under its composite rule."""
    canon = canonical(module, merge=canonize)
    claims: dict[First, FirstClaim] = {}
    plain: list[nn.Module] = []

    def match(name: str, node: nn.Module) -> nn.Module | None:
        replaced = canon(name, node)
        current = node if replaced is None else replaced
        if isinstance(current, MergedBatchNorm):
            return current
        kind = current.layer if isinstance(current, MergedLinear) else current
        choice = choose(composite, name, kind)
        if choice is None:
            if replaced is None and isinstance(current, plain_types()):
                return unrouted(current)  # its plain gradient hands relevance on as it is
            return replaced
        if choice.first_key is None and choice.rule is None:
            plain.append(current)
            return unrouted(current)
        if hasattr(choice.rule, "layer") or hasattr(choice.first_rule, "layer"):
            return _own_layer(choice, name, current)
        if current._modules and not isinstance(current, BATCHNORMS):
            raise FattrError(f"lrp: the composite maps '{name}' ({type(current).__name__}), a "
                             "module with submodules, to a rule; rules apply to leaf layers "
                             "(map it to None to keep its plain gradient).")
        return RelevanceLayer(current, name, choice, claims)

    table = routes(composite)
    tree = link(rewrite(module, match, mode=lambda: RelevanceMode(table, REFUSED)))
    check_supported(tree, plain)
    return tree


class RelevanceMode(StatefulMode):
    """The routes of the relevance form; a call no route covers runs when it only moves,
    copies or selects values, or acts on nothing that depends on the input, and is refused
    otherwise (naming it), never passed on as a silent plain gradient."""

    def __torch_function__(self, func, types, args=(), kwargs=None):
        if func in ATTENTION_CALLS and not scope_routes().get(func):
            raise FattrError(f"lrp: the model calls {call_name(func)} (attention), which this "
                             "composite has no rule for; use the 'attnlrp' or 'cp_lrp' "
                             "composite (or add fattr.lrp.AttnLRP() for the attention module "
                             "to a composite whose rules all have a single-backward form).")
        return super().__torch_function__(func, types, args, kwargs)

    def default(self, func: Callable, args: tuple, kwargs: dict) -> Any:
        if func in STRUCTURAL:
            return func(*args, **kwargs)
        return checked(func, args, kwargs, "Relevance-form LRP covers layers with rules, "
                       "activations, sums, means and average pooling, scaling by a constant "
                       "and structural calls")


def _own_layer(choice: Choice, name: str, module: nn.Module) -> nn.Module:
    """The relevance module of a rule that brings its own (`fattr.lrp.attention`)."""
    if choice.first_key is not None:
        raise FattrError(f"lrp: the {type(choice.first_rule or choice.rule).__name__} rule for "
                         f"'{name}' ({type(module).__name__}) cannot be used with a "
                         "first(...) key; map the module type or name to it.")
    return choice.rule.layer(module, name)


# modules whose nonlinearity no rule reaches: fused kernels, and parameter-free nonlinear leaves
FUSED = (nn.MultiheadAttention, nn.RNNBase, nn.RNNCellBase, nn.Transformer,
         nn.TransformerEncoderLayer, nn.TransformerDecoderLayer)
NONLINEAR = (nn.Softmax, nn.Softmin, nn.LogSoftmax, nn.Softmax2d, nn.LocalResponseNorm,
             nn.InstanceNorm1d, nn.InstanceNorm2d, nn.InstanceNorm3d, nn.CrossMapLRN2d)


def check_supported(tree: nn.Module, plain: list[nn.Module]) -> None:
    """Every leaf with parameters has a rule or was mapped to None, and no fused or nonlinear
    module is left without one. Parameter-free leaves and containers run under the routes of
    `RelevanceMode`, which refuse any call on the input's values that has no rule."""
    skip = {id(m) for m in plain}

    def visit(name: str, module: nn.Module) -> None:
        own_rule = (RelevanceLayer, MergedBatchNorm, *RULE_LAYERS, *plain_types())
        if id(module) in skip or isinstance(module, own_rule):
            return
        if module._modules and not isinstance(module, FUSED):
            for child, sub in module._modules.items():
                if sub is not None:
                    visit(f"{name}.{child}" if name else child, sub)
            return
        own = [k for k, v in module._parameters.items() if v is not None]
        if not own and not isinstance(module, (*FUSED, *NONLINEAR)):
            return
        where = f"'{name}'" if name else "the model itself"
        kind = module.layer if isinstance(module, MergedLinear) else module
        raise FattrError(
            f"lrp: no LRP rule for {where} ({type(kind).__name__}). fattr covers Linear, "
            "convolutions, BatchNorm, LayerNorm, average and max pooling, activations, dropout, "
            "flatten and residual sums, and attention with the 'attnlrp' and 'cp_lrp' "
            "composites. Map the module to a rule in a custom composite (e.g. "
            "{nn.GroupNorm: fattr.lrp.Pass()}), or to None to keep its plain gradient, or use a "
            "gradient method.")

    visit("", tree)
