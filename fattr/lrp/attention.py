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
from fattr.lrp.relevance import Node, relevance
from fattr.lrp.rules import stabilize
from fattr.rules.rewrite import RuleModule


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
    """An nn.LayerNorm as one relevance node."""

    def __init__(self, module: nn.LayerNorm, name: str, rule: FrozenStd):
        super().__init__(module)
        names = tuple(_tensors(module))
        dims = tuple(range(-len(module.normalized_shape), 0))
        self.__dict__.update(name=name, rule=rule, op=NormOp(dims, module.eps, names))

    def forward(self, x: Tensor) -> Tensor:
        node = Node(self.op, self.rule, self.op.names, f"'{self.name}' (LayerNorm)")
        return relevance(x, node, *_tensors(self).values())


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
    """Base of the attention rules: each brings an `AttentionLayer` for the module."""

    epsilon: float

    def layer(self, module: nn.Module, name: str) -> nn.Module:
        _check_attention(module, name, type(self).__name__)
        return AttentionLayer(module, name, self)


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
