"""LRP rules as data (zennit's decomposition).

A layer rule is a set of terms, each an input modifier and a parameter modifier, plus how the
incoming relevance is shared among the terms' outputs and how the terms' input gradients are
reduced to the input relevance:

    z_k = layer(in_k(x); mod_k(params))            for each term k
    g_k = share(R, z)_k                            e.g. R / stab(z_0) for Epsilon
    R_x = reduce(in_k(x) * (dz_k/din_k)^T g_k)     the vjp of the modified layer

The vector-Jacobian products are `torch.func.vjp` of the layer with modified parameters, so the
relevance stays differentiable in the parameters. Every default is zennit's (stabilizer 1e-6,
gamma 0.25, alpha=2, beta=1) and every rule reproduces zennit's arithmetic, bias handling
included. stab(z) = z + eps * sign(z) with sign(0) = +1 (and 0 / 0 = 0 when eps = 0).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, fields
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from fattr.errors import FattrError
from fattr.lrp.relevance import Op

ParamModifier = Callable[[str, Tensor], Tensor]


def stabilize(z: Tensor, eps: float) -> Tensor:
    """z + eps * sign(z), with sign(0) = +1 (zennit's and captum's stabilizer). With eps = 0
    (LRP-0) an exactly zero z, whose relevance is zero too, divides by 1 instead of 0."""
    if eps > 0:
        return torch.where(z >= 0, z + eps, z - eps)
    return torch.where(z == 0, 1.0, z).to(z.dtype)


def _keep(name: str, p: Tensor) -> Tensor:
    return p


def _clamp(min: float | None = None, max: float | None = None) -> ParamModifier:
    return lambda name, p: p.clamp(min=min, max=max)


def _gamma(gamma: float, min: float | None = None, max: float | None = None) -> ParamModifier:
    return lambda name, p: p + gamma * p.clamp(min=min, max=max)


def _positive(x: Tensor) -> Tensor:
    return x.clamp(min=0)


def _negative(x: Tensor) -> Tensor:
    return x.clamp(max=0)


def _same(x: Tensor) -> Tensor:
    return x


def check_fields(rule: Any) -> None:
    """Every float field of a rule dataclass (epsilon, stabilizer, gamma...) is a number >= 0."""
    for spec in fields(rule):
        value = getattr(rule, spec.name)
        numeric = isinstance(value, (int, float)) and not isinstance(value, bool)
        if spec.type in ("float", float) and not (numeric and value >= 0):
            raise FattrError(f"lrp: {type(rule).__name__}({spec.name}=...) must be a number "
                             f">= 0, got {value!r}.")


@dataclass(frozen=True)
class Term:
    """One modified evaluation of the layer: input modifier, parameter modifier, and whether the
    bias is kept (a dropped bias is zero, as zennit's `zero_params=['bias']`)."""

    input: Callable[[Tensor], Tensor] = _same
    param: ParamModifier = _keep
    bias: bool = True

    def params(self, params: Mapping[str, Tensor]) -> list[Tensor]:
        return [torch.zeros_like(p) if name == "bias" and not self.bias else self.param(name, p)
                for name, p in params.items()]


class LayerRule:
    """Base of the rules with terms. The defaults are one unmodified term, the relevance shared
    in proportion to the output (R / stab(z)), and reduce = sum_k in_k * grad_k: Epsilon's
    arithmetic. Every float field of a rule must be >= 0."""

    def __post_init__(self) -> None:
        check_fields(self)

    def stabilizer_value(self) -> float:
        return self.stabilizer  # type: ignore[attr-defined]

    def terms(self, x: Tensor) -> Sequence[Term]:
        """The modified evaluations of the layer (x is the layer's input)."""
        return (Term(),)

    def share(self, r: Tensor, z: list[Tensor]) -> list[Tensor]:
        """The vector each term's vjp takes, from the output relevance and the terms' outputs."""
        return [r / stabilize(z[0], self.stabilizer_value())]

    def reduce(self, inputs: list[Tensor], grads: list[Tensor]) -> Tensor:
        return sum(i * g for i, g in zip(inputs, grads))  # type: ignore[return-value]

    def relevance(self, op: Op, x: Tensor, params: Mapping[str, Tensor], r: Tensor) -> Tensor:
        inputs, outputs, vjps = [], [], []
        for term in self.terms(x):
            modified = term.params(params)
            inp = term.input(x)
            z, vjp = _evaluate(op, inp, modified)
            inputs.append(inp)
            outputs.append(z)
            vjps.append(vjp)
        grads = [vjp(g) for vjp, g in zip(vjps, self.share(r, outputs))]
        return self.reduce(inputs, grads)


def _evaluate(op: Op, x: Tensor, params: list[Tensor]) -> tuple[Tensor, Callable[[Tensor], Tensor]]:
    """(op(x, *params), the vector-Jacobian product in x). A Linear layer's is g @ W, written
    out: `torch.func.vjp` costs ~0.3 ms of Python per call, the bulk of a small layer's rule."""
    if op is F.linear:
        weight = params[0]
        return op(x, *params), lambda g: g @ weight
    z, vjp = torch.func.vjp(lambda i: op(i, *params), x)
    return z, lambda g: vjp(g)[0]


@dataclass(frozen=True)
class Epsilon(LayerRule):
    """LRP-epsilon: R_i = x_i sum_j w_ij R_j / stab(z_j). `epsilon=0` is LRP-0.

    Bach et al., "On Pixel-Wise Explanations for Non-Linear Classifier Decisions by Layer-Wise
    Relevance Propagation" (2015), https://doi.org/10.1371/journal.pone.0130140
    """

    epsilon: float = 1e-6

    def stabilizer_value(self) -> float:
        return self.epsilon


@dataclass(frozen=True)
class Norm(LayerRule):
    """Relevance proportional to each input's contribution, for parameter-free sums and average
    pools: R_i = x_i (dz/dx_i) R / stab(z), Epsilon's arithmetic with a stabilizer only."""

    stabilizer: float = 1e-6


@dataclass(frozen=True)
class ZPlus(LayerRule):
    """LRP-z+ (alpha=1, beta=0): only positive contributions, x+ w+ and x- w-, bias b+.

    Montavon et al., "Explaining nonlinear classification decisions with deep Taylor
    decomposition" (2017), https://doi.org/10.1016/j.patcog.2016.11.008
    """

    stabilizer: float = 1e-6

    def terms(self, x: Tensor) -> Sequence[Term]:
        return (Term(_positive, _clamp(min=0)), Term(_negative, _clamp(max=0), bias=False))

    def share(self, r: Tensor, z: list[Tensor]) -> list[Tensor]:
        return [r / stabilize(z[0] + z[1], self.stabilizer)] * 2


@dataclass(frozen=True)
class AlphaBeta(LayerRule):
    """LRP-alpha-beta: alpha times the positive share minus beta times the negative share, with
    alpha - beta = 1 (default alpha=2, beta=1).

    Bach et al. (2015), https://doi.org/10.1371/journal.pone.0130140
    """

    alpha: float = 2.0
    beta: float = 1.0
    stabilizer: float = 1e-6

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.alpha - self.beta != 1:
            raise FattrError(f"lrp: AlphaBeta needs alpha - beta = 1 (relevance conservation), "
                             f"got alpha={self.alpha}, beta={self.beta}; e.g. alpha=2, beta=1.")

    def terms(self, x: Tensor) -> Sequence[Term]:
        return (Term(_positive, _clamp(min=0)), Term(_negative, _clamp(max=0), bias=False),
                Term(_positive, _clamp(max=0)), Term(_negative, _clamp(min=0), bias=False))

    def share(self, r: Tensor, z: list[Tensor]) -> list[Tensor]:
        positive = r / stabilize(z[0] + z[1], self.stabilizer)
        negative = r / stabilize(z[2] + z[3], self.stabilizer)
        return [positive, positive, negative, negative]

    def reduce(self, inputs: list[Tensor], grads: list[Tensor]) -> Tensor:
        i, g = inputs, grads
        return (self.alpha * (i[0] * g[0] + i[1] * g[1])
                - self.beta * (i[2] * g[2] + i[3] * g[3]))


@dataclass(frozen=True)
class Gamma(LayerRule):
    """Generalized LRP-gamma: weights w + gamma w+ for the contributions that agree in sign with
    the output, split over positive and negative inputs (zennit's form; default gamma=0.25).

    Montavon et al., "Layer-Wise Relevance Propagation: An Overview" (2019),
    https://doi.org/10.1007/978-3-030-28954-6_10; Andeol et al. (2021).
    """

    gamma: float = 0.25
    stabilizer: float = 1e-6

    def terms(self, x: Tensor) -> Sequence[Term]:
        up, down = _gamma(self.gamma, min=0), _gamma(self.gamma, max=0)
        return (Term(_positive, up), Term(_negative, down, bias=False),
                Term(_positive, down), Term(_negative, up, bias=False), Term())

    def share(self, r: Tensor, z: list[Tensor]) -> list[Tensor]:
        positive = (z[4] > 0) * r / stabilize(z[0] + z[1], self.stabilizer)
        negative = (z[4] < 0) * r / stabilize(z[2] + z[3], self.stabilizer)
        return [positive, positive, negative, negative, torch.zeros_like(r)]

    def reduce(self, inputs: list[Tensor], grads: list[Tensor]) -> Tensor:
        return super().reduce(inputs[:4], grads[:4])


@dataclass(frozen=True)
class ZBox(LayerRule):
    """LRP-z^B for a first layer on bounded input low <= x <= high:
    R_i = sum_j (x_i w_ij - l_i w+_ij - h_i w-_ij) R_j / stab(z_j - l w+ - h w-).

    `low`/`high`: numbers or tensors broadcastable to x (e.g. per channel, shape (1, 3, 1, 1)).
    Montavon et al. (2017), https://doi.org/10.1016/j.patcog.2016.11.008
    """

    low: Any
    high: Any
    stabilizer: float = 1e-6

    def __post_init__(self) -> None:
        super().__post_init__()
        for name in ("low", "high"):
            value = getattr(self, name)
            if not isinstance(value, (int, float, Tensor)) or isinstance(value, bool):
                raise FattrError(f"lrp: ZBox({name}=...) must be a number or a tensor "
                                 f"broadcastable to the input, got {type(value).__name__}.")
        low, high = torch.as_tensor(self.low), torch.as_tensor(self.high)
        try:
            inverted = bool((low > high.to(low.device)).any())
        except RuntimeError:
            raise FattrError(f"lrp: ZBox bounds of shapes {tuple(low.shape)} and "
                             f"{tuple(high.shape)} do not broadcast together.") from None
        if inverted:
            raise FattrError(f"lrp: ZBox needs low <= high (the input's lower and upper bounds), "
                             f"got low={_show(self.low)} and high={_show(self.high)}; swap them.")

    def _bound(self, value: Any, x: Tensor) -> Tensor:
        bound = torch.as_tensor(value, dtype=x.dtype, device=x.device)
        try:
            return bound.expand(x.shape)
        except RuntimeError:
            raise FattrError(f"lrp: ZBox bound of shape {tuple(bound.shape)} does not broadcast "
                             f"to the first layer's input of shape {tuple(x.shape)}.") from None

    def terms(self, x: Tensor) -> Sequence[Term]:
        low, high = self._bound(self.low, x), self._bound(self.high, x)
        return (Term(), Term(lambda _: low, _clamp(min=0)), Term(lambda _: high, _clamp(max=0)))

    def share(self, r: Tensor, z: list[Tensor]) -> list[Tensor]:
        return [r / stabilize(z[0] - z[1] - z[2], self.stabilizer)] * 3

    def reduce(self, inputs: list[Tensor], grads: list[Tensor]) -> Tensor:
        i, g = inputs, grads
        return i[0] * g[0] - i[1] * g[1] - i[2] * g[2]


def _show(value: Any) -> str:
    return f"a tensor of shape {tuple(value.shape)}" if isinstance(value, Tensor) else repr(value)


def _ones(name: str, p: Tensor) -> Tensor:
    return torch.ones_like(p)


def _square(name: str, p: Tensor) -> Tensor:
    return p * p


@dataclass(frozen=True)
class Flat(LayerRule):
    """LRP-flat: relevance spread uniformly over each output's receptive field
    (R_i = sum_j R_j / |receptive field of j|): WSquare with all weights one and no bias.

    Lapuschkin et al., "Unmasking Clever Hans predictors" (2019),
    https://doi.org/10.1038/s41467-019-08987-4
    """

    stabilizer: float = 1e-6

    def terms(self, x: Tensor) -> Sequence[Term]:
        return (Term(torch.ones_like, _ones, bias=False),)

    def reduce(self, inputs: list[Tensor], grads: list[Tensor]) -> Tensor:
        return grads[0]


@dataclass(frozen=True)
class WSquare(LayerRule):
    """LRP-w^2: R_i = sum_j w_ij^2 R_j / stab(sum_i w_ij^2 + b_j^2), for a first layer on
    unbounded input. As zennit, the bias is squared too (zennit's `WSquare` squares every
    parameter); the paper's rule has no bias.

    Montavon et al. (2017), https://doi.org/10.1016/j.patcog.2016.11.008
    """

    stabilizer: float = 1e-6

    def terms(self, x: Tensor) -> Sequence[Term]:
        return (Term(torch.ones_like, _square),)

    def reduce(self, inputs: list[Tensor], grads: list[Tensor]) -> Tensor:
        return grads[0]


@dataclass(frozen=True)
class Pass:
    """Relevance passes through unchanged (activations, BatchNorm after folding): R_x = R_y.

    The layer must keep its shape."""

    def relevance(self, op: Op, x: Tensor, params: Mapping[str, Tensor], r: Tensor) -> Tensor:
        return r
