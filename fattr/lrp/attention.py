"""LRP for transformers: LayerNorm and `nn.MultiheadAttention` rules (AttnLRP and CP-LRP).

Every rule here is the Gradient x Input form of its LRP rule: a node y = f(x) hands down

    R_x = x * Jmod(x)^T (R_y / stab(y))

with Jmod the Jacobian of f in which some forward values are constants. Where R_y = y * g
(g the modified gradient at y) this is x times the modified gradient at x, so a network of such
nodes, Epsilon on Linear layers, Pass on elementwise activations and Norm on sums gives
x * (modified gradient) at the input: lxt's "efficient" AttnLRP (Achtibat et al. 2024).

- `FrozenStd` (LayerNorm): the identity rule on the normalization. The standard deviation is a
  constant, so LayerNorm is a linear map and its relevance is that map's Epsilon relevance.
- `AttnLRP` (attention): the uniform rule on the bilinear matmuls Q K^T and A V and the
  softmax's own Taylor rule, i.e. the gradients reaching q and k divided by 4, v's by 2.
- `CPLRP` (attention): the attention weights are constants; relevance flows only through v.

Constants are the forward values computed OUTSIDE the inner `torch.func.vjp` (never
`detach()`): they are constants for the relevance but stay functions of x and the parameters at
outer levels, so a `torch.func.grad` of relevance w.r.t. the parameters differentiates them.
(A `detach()` would cut the outer levels too: under torch.func,
`grad(lambda w: grad(lambda x: (x * (w * x).detach()).sum())(x).sum())(w)` is zero.)

>>> attr = fattr.lrp(f, "attnlrp")          # or "cp_lrp"; f from fattr.functional(vit)
>>> r = attr(params, images, target=labels)  # (B, 3, H, W)
>>> attr = fattr.lrp(f, {nn.MultiheadAttention: fattr.lrp.CPLRP(), nn.LayerNorm:
...                      fattr.lrp.FrozenStd(), **fattr.lrp.COMPOSITES["epsilon"]()})
These rules bring their own relevance module (`rule.layer(module, name)`), because attention
takes three inputs and owns a submodule, and LayerNorm's rule needs its configuration.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from fattr.errors import FattrError
from fattr.lrp.calls import CallRules, attention_routes, linear_routes
from fattr.lrp.layers import parametrized
from fattr.lrp.modified import frozen, stabilized
from fattr.lrp.relevance import Node, relevance
from fattr.lrp.rules import check_fields, stabilize
from fattr.rules.rewrite import RuleModule, scoped


def _tensors(module: nn.Module, prefix: str = "") -> dict[str, Tensor]:
    """`module`'s own non-None parameters, by name (with `prefix`)."""
    return {prefix + k: v for k, v in module._parameters.items() if v is not None}


def times_input(fn: Callable[[Tensor], Tensor], x: Tensor, r: Tensor, epsilon: float) -> Tensor:
    """R_x = x * J^T (R_y / stab(y)) with y = fn(x), J its Jacobian at x: the Gradient x Input
    form of a rule whose modified Jacobian is that of `fn`."""
    y, vjp = torch.func.vjp(fn, x)
    return x * vjp(r / stabilize(y, epsilon))[0]


# LayerNorm ---------------------------------------------------------------------------------

@dataclass(frozen=True)
class NormOp:
    """LayerNorm over the last `dims` axes as `op(x, *tensors)` (tensors named `names`), and
    `normalize(x, std, params)`: the same map with the standard deviation given."""

    dims: tuple[int, ...]
    eps: float
    names: tuple[str, ...]

    def std(self, x: Tensor) -> Tensor:
        return x.var(self.dims, unbiased=False, keepdim=True).add(self.eps).sqrt()

    def normalize(self, x: Tensor, std: Tensor, params: Mapping[str, Tensor]) -> Tensor:
        y = (x - x.mean(self.dims, keepdim=True)) / std
        if "weight" in params:
            y = y * params["weight"]
        return y + params["bias"] if "bias" in params else y

    def __call__(self, x: Tensor, *tensors: Tensor) -> Tensor:
        return self.normalize(x, self.std(x), dict(zip(self.names, tensors)))


@dataclass(frozen=True)
class FrozenStd:
    """LayerNorm by the identity rule on its normalization (AttnLRP, Eq. 9; lxt's
    `layer_norm_forward`): the standard deviation is a constant, so y = (x - mean(x)) / std * w
    + b is linear in x and R_x = x * Jmod^T (R_y / stab(y)), Epsilon's relevance of that map.

    Achtibat et al., "AttnLRP: Attention-Aware Layer-Wise Relevance Propagation for
    Transformers" (ICML 2024), https://arxiv.org/abs/2402.05602
    """

    epsilon: float = 1e-6

    def __post_init__(self) -> None:
        check_fields(self)

    def layer(self, module: nn.Module, name: str) -> nn.Module:
        if not isinstance(module, nn.LayerNorm):
            raise FattrError(f"lrp: the FrozenStd rule is for nn.LayerNorm, but the composite "
                             f"maps '{name}' ({type(module).__name__}) to it.")
        return NormLayer(module, name, self)

    def relevance(self, op: NormOp, x: Tensor, params: Mapping[str, Tensor], r: Tensor
                  ) -> Tensor:
        std = op.std(x)  # a constant of the inner vjp only
        return times_input(lambda i: op.normalize(i, std, params), x, r, self.epsilon)


class NormLayer(RuleModule):
    """An nn.LayerNorm, or a subclass with its own forward (timm's LayerNorm2d permutes the
    channels last), run as written with its F.layer_norm call as one FrozenStd node."""

    def __init__(self, module: nn.LayerNorm, name: str, rule: FrozenStd):
        super().__init__(module)
        buffers = {k: v for k, v in module._buffers.items() if v is not None}
        self.__dict__.update(name=name, rule=rule,
                             op=parametrized(module, buffers, tuple(_tensors(module))))
        scoped(self, {F.layer_norm: self.frozen})

    def frozen(self, x: Tensor, normalized_shape: Any, weight: Tensor | None = None,
               bias: Tensor | None = None, eps: float = 1e-5) -> Tensor:
        """F.layer_norm as a FrozenStd node."""
        given = {k: v for k, v in (("weight", weight), ("bias", bias)) if v is not None}
        op = NormOp(tuple(range(-len(normalized_shape), 0)), eps, tuple(given))
        node = Node(op, self.rule, op.names, f"'{self.name}' ({type(self.layer).__name__})")
        return relevance(x, node, *given.values())

    def forward(self, x: Tensor) -> Tensor:
        return self.op(x, *_tensors(self).values())


# Attention ---------------------------------------------------------------------------------

@dataclass(frozen=True)
class AttentionOp:
    """`nn.MultiheadAttention` (packed in-projection, no masks) as explicit ops:

        q, k, v = x_q W_q^T + b_q, x_k W_k^T + b_k, x_v W_v^T + b_v   (split into heads)
        A = softmax(q k^T / sqrt(d));  y = concat_heads(A v) W_o^T + b_o

    `attend(x_q, x_k, x_v, params)` takes the three inputs apart (the rules differentiate them
    separately); `op(x, *tensors)` is self-attention, `weights(x, *tensors)` its weights."""

    heads: int
    batch_first: bool
    names: tuple[str, ...]
    average: bool = True

    def _scores(self, xq: Tensor, xk: Tensor, p: Mapping[str, Tensor]) -> Tensor:
        w, b = p["in_proj_weight"].chunk(3), _split_bias(p.get("in_proj_bias"))
        q, k = self._heads(F.linear(xq, w[0], b[0])), self._heads(F.linear(xk, w[1], b[1]))
        return torch.softmax(q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1]), dim=-1)

    def _heads(self, t: Tensor) -> Tensor:  # (B, S, E) -> (B, heads, S, E / heads)
        return t.unflatten(-1, (self.heads, -1)).transpose(1, 2)

    def _batched(self, t: Tensor) -> Tensor:  # the input as (B, S, E)
        if t.dim() == 2:
            return t.unsqueeze(0)
        return t if self.batch_first else t.transpose(0, 1)

    def attend(self, xq: Tensor, xk: Tensor, xv: Tensor, p: Mapping[str, Tensor]) -> Tensor:
        unbatched = xq.dim() == 2
        xq, xk, xv = self._batched(xq), self._batched(xk), self._batched(xv)
        a = self._scores(xq, xk, p)
        v = self._heads(F.linear(xv, p["in_proj_weight"].chunk(3)[2],
                                 _split_bias(p.get("in_proj_bias"))[2]))
        y = F.linear((a @ v).transpose(1, 2).flatten(-2), p["out_proj.weight"],
                     p.get("out_proj.bias"))
        if unbatched:
            return y.squeeze(0)
        return y if self.batch_first else y.transpose(0, 1)

    def __call__(self, x: Tensor, *tensors: Tensor) -> Tensor:
        return self.attend(x, x, x, dict(zip(self.names, tensors)))

    def weights(self, x: Tensor, *tensors: Tensor) -> Tensor:
        """The attention weights (B, heads, S, S), or their mean over heads (B, S, S)."""
        xb = self._batched(x)
        a = self._scores(xb, xb, dict(zip(self.names, tensors)))
        a = a.mean(1) if self.average else a
        return a.squeeze(0) if x.dim() == 2 else a


def _split_bias(b: Tensor | None) -> tuple[Tensor | None, ...]:
    return (None, None, None) if b is None else b.chunk(3)


def _check_attention(module: nn.Module, name: str, rule: str) -> None:
    where = f"lrp: {rule} on '{name}' (MultiheadAttention)"
    if not isinstance(module, nn.MultiheadAttention):
        raise FattrError(f"lrp: the {rule} rule is for nn.MultiheadAttention, but the composite "
                         f"maps '{name}' ({type(module).__name__}) to it.")
    if not module._qkv_same_embed_dim:
        raise FattrError(f"{where}: the module has separate q/k/v projection weights (kdim or "
                         f"vdim != embed_dim: kdim={module.kdim}, vdim={module.vdim}, "
                         f"embed_dim={module.embed_dim}); only the packed in-projection of "
                         "self-attention is supported.")
    if module.bias_k is not None or module.add_zero_attn:
        raise FattrError(f"{where}: add_bias_kv=True and add_zero_attn=True append tokens to "
                         "keys and values, which is not supported; build the module without "
                         "them.")


class AttentionRule:
    """Base of the attention rules: each brings an `AttentionLayer` for the module (and a
    `GradientAttention` for single-backward LRP)."""

    epsilon: float

    def __post_init__(self) -> None:
        check_fields(self)

    def layer(self, module: nn.Module, name: str) -> nn.Module:
        _check_attention(module, name, type(self).__name__)
        return AttentionLayer(module, name, self)

    def gradient_layer(self, module: nn.Module, name: str) -> nn.Module:
        _check_attention(module, name, type(self).__name__)
        return GradientAttention(module, name, self)


@dataclass(frozen=True)
class AttnLRP(AttentionRule):
    """nn.MultiheadAttention by AttnLRP: the uniform rule on the matmuls q k^T and A v (each
    operand gets half of the relevance) and the softmax's Taylor rule
    R_s = s * (R_A - A * sum R_A), in Gradient x Input form:

        R_x = x * (g_q / 4 + g_k / 4 + g_v / 2),   (g_q, g_k, g_v) = J_{q,k,v}^T (R_y / stab(y))

    the vector-Jacobian products of the attention with respect to its query, key and value
    inputs, taken apart (lxt's `wrap_attention_forward` for HuggingFace attention).

    Achtibat et al., "AttnLRP: Attention-Aware Layer-Wise Relevance Propagation for
    Transformers" (ICML 2024), https://arxiv.org/abs/2402.05602
    """

    epsilon: float = 1e-6

    def relevance(self, op: AttentionOp, x: Tensor, params: Mapping[str, Tensor], r: Tensor
                  ) -> Tensor:
        y, vjp = torch.func.vjp(lambda q, k, v: op.attend(q, k, v, params), x, x, x)
        gq, gk, gv = vjp(r / stabilize(y, self.epsilon))
        return x * ((gq + gk) / 4 + gv / 2)


@dataclass(frozen=True)
class CPLRP(AttentionRule):
    """nn.MultiheadAttention by CP-LRP: the attention weights are constants, so the layer is
    linear in its value input and R_x = x * J_v^T (R_y / stab(y)) (lxt's
    `cp_multi_head_attention_forward`: query and key detached).

    Ali, Schnake, Eberle, Montavon, Mueller, Wolf, "XAI for Transformers: Better Explanations
    through Conservative Propagation" (ICML 2022), https://arxiv.org/abs/2202.07304
    """

    epsilon: float = 1e-6

    def relevance(self, op: AttentionOp, x: Tensor, params: Mapping[str, Tensor], r: Tensor
                  ) -> Tensor:
        # the query and key inputs are the forward value x: the weights are constants
        return times_input(lambda v: op.attend(x, x, v, params), x, r, self.epsilon)


class NoRelevance:
    """No relevance flows back through this output (the returned attention weights)."""

    def relevance(self, op: Any, x: Tensor, params: Mapping[str, Tensor], r: Tensor) -> Tensor:
        return torch.zeros_like(x)


class AttentionLayer(RuleModule):
    """An nn.MultiheadAttention as one relevance node (its out_proj kept as a submodule, so
    the tree takes the user's params under their names)."""

    def __init__(self, module: nn.MultiheadAttention, name: str, rule: AttentionRule):
        super().__init__(module)
        self.out_proj = module.out_proj
        names = (*_tensors(module), *_tensors(module.out_proj, "out_proj."))
        self.__dict__.update(name=name, rule=rule, heads=module.num_heads,
                             batch_first=module.batch_first, names=names)

    def _fail(self, reason: str) -> FattrError:
        return FattrError(f"lrp: {type(self.rule).__name__} on '{self.name}' "
                          f"(MultiheadAttention): {reason}")

    def forward(self, query: Tensor, key: Tensor, value: Tensor,
                key_padding_mask: Tensor | None = None, need_weights: bool = True,
                attn_mask: Tensor | None = None, average_attn_weights: bool = True,
                is_causal: bool = False) -> tuple[Tensor, Tensor | None]:
        if not (query is key and key is value):
            raise self._fail("query, key and value are different tensors; only self-attention "
                             "(module(x, x, x)) is supported.")
        if key_padding_mask is not None or attn_mask is not None or is_causal:
            raise self._fail("masks (key_padding_mask, attn_mask, is_causal) are not "
                             "supported; call it without a mask.")
        if self.training and self.layer.dropout > 0:
            raise self._fail("the module is in training mode with dropout; call model.eval().")
        tensors = (*_tensors(self).values(), *_tensors(self.out_proj).values())
        op = AttentionOp(self.heads, self.batch_first, self.names, average_attn_weights)
        where = f"'{self.name}' (MultiheadAttention)"
        y = relevance(query, Node(op, self.rule, self.names, where), *tensors)
        if not need_weights:
            return y, None
        weights = Node(op.weights, NoRelevance(), self.names, f"the weights of {where}")
        return y, relevance(query, weights, *tensors)


RULE_LAYERS = (NormLayer, AttentionLayer)


# Single-backward form ------------------------------------------------------------------------

def _float_mask(mask: Tensor | None, dtype: torch.dtype) -> Tensor | None:
    """A boolean mask (True: not attended) as an additive float mask."""
    if mask is None or mask.is_floating_point():
        return mask
    return torch.zeros(mask.shape, dtype=dtype, device=mask.device).masked_fill(mask,
                                                                               float("-inf"))


def merged_mask(attn_mask: Tensor | None, key_padding_mask: Tensor | None, is_causal: bool,
                batch: int, heads: int, length: int, source: int, dtype: torch.dtype,
                device: torch.device) -> Tensor | None:
    """nn.MultiheadAttention's masks as one additive mask broadcastable to (B, heads, L, S)."""
    mask = _float_mask(attn_mask, dtype)
    if mask is None and is_causal:
        mask = _float_mask(torch.ones(length, source, dtype=torch.bool, device=device)
                           .triu(1), dtype)
    if mask is not None and mask.dim() == 3:  # (B * heads, L, S)
        mask = mask.reshape(batch, heads, length, source)
    padding = _float_mask(key_padding_mask, dtype)
    if padding is not None:
        padding = padding.reshape(batch, 1, 1, source)
        mask = padding if mask is None else mask + padding
    return mask


class GradientAttention(RuleModule):
    """An nn.MultiheadAttention written out in torch ops for single-backward LRP
    (`fattr.lrp.calls`): projections, scores, softmax (or fused attention when no weights are
    returned), masks, cross-attention. Its products and softmax follow its own rule, its
    projections have no stabilizer, and Epsilon's stabilizer acts on its output: the relevance
    equals that of `AttentionLayer`. The weights it returns carry no relevance."""

    def __init__(self, module: nn.MultiheadAttention, name: str, rule: AttentionRule):
        super().__init__(module)
        self.out_proj = module.out_proj
        self.__dict__.update(name=name, rule=rule, heads=module.num_heads,
                             batch_first=module.batch_first)
        inside = CallRules(attention=type(rule).__name__)
        scoped(self, {**linear_routes(0.0), **attention_routes(inside)})

    def _batched(self, t: Tensor) -> Tensor:  # (B, S, E)
        if t.dim() == 2:
            return t.unsqueeze(0)
        return t if self.batch_first else t.transpose(0, 1)

    def _heads(self, t: Tensor) -> Tensor:  # (B, S, E) -> (B, heads, S, E / heads)
        return t.unflatten(-1, (self.heads, -1)).transpose(1, 2)

    def forward(self, query: Tensor, key: Tensor, value: Tensor,
                key_padding_mask: Tensor | None = None, need_weights: bool = True,
                attn_mask: Tensor | None = None, average_attn_weights: bool = True,
                is_causal: bool = False) -> tuple[Tensor, Tensor | None]:
        if self.training and self.layer.dropout > 0:
            raise FattrError(f"lrp: {type(self.rule).__name__} on '{self.name}' "
                             "(MultiheadAttention): the module is in training mode with "
                             "dropout; call model.eval().")
        unbatched = query.dim() == 2
        w, b = self.in_proj_weight.chunk(3), _split_bias(self.in_proj_bias)
        xq, xk, xv = self._batched(query), self._batched(key), self._batched(value)
        q, k, v = (self._heads(F.linear(t, wi, bi)) for t, wi, bi in zip((xq, xk, xv), w, b))
        batch, _, length, size = q.shape
        if unbatched and key_padding_mask is not None:
            key_padding_mask = key_padding_mask.unsqueeze(0)
        mask = merged_mask(attn_mask, key_padding_mask, is_causal, batch, self.heads, length,
                           k.shape[2], q.dtype, q.device)
        weights = None
        if need_weights:
            scores = q @ k.transpose(-2, -1) / math.sqrt(size)
            a = torch.softmax(scores if mask is None else scores + mask, dim=-1)
            out = a @ v
            weights = frozen(a.mean(1) if average_attn_weights else a)
            weights = weights.squeeze(0) if unbatched else weights
        else:
            out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
        y = F.linear(out.transpose(1, 2).flatten(-2), self.out_proj.weight, self.out_proj.bias)
        y = y.squeeze(0) if unbatched else (y if self.batch_first else y.transpose(0, 1))
        return stabilized(y, self.rule.epsilon), weights
