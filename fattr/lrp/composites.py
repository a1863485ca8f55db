"""Composites: which rule each layer gets (zennit's named composites, and user mappings).

A composite is a mapping, tried in order, from a key to a rule:
- a module type or a tuple of types (a folded conv+BatchNorm matches its conv's type),
- a dotted module name as in `named_modules()`,
- `first(types)`: the first module of these types to RUN (execution order, decided during the
  call, so a model that registers its layers out of order still gets the right first layer);
  the other modules of these types fall through to the later keys,
and the rule is a rule instance (`Epsilon()`, ...), or None for "keep the plain gradient". After
the user's keys come fattr's base rules (zennit's): activations Pass, `Sum` and average pools
Norm, BatchNorm Pass (a BatchNorm that canonization folded is the identity).
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Union

from torch import nn

from fattr.errors import FattrError, FattrTypeError
from fattr.lrp.attention import CPLRP, AttnLRP, FrozenStd
from fattr.lrp.canonizers import Sum
from fattr.lrp.layers import (
    AVERAGE_POOLS,
    BATCHNORMS,
    CONVOLUTIONS,
    LINEAR_LAYERS,
    TRANSPOSED,
    activation_types,
)
from fattr.lrp.relevance import Rule
from fattr.lrp.rules import AlphaBeta, Epsilon, Flat, Gamma, Norm, Pass, ZBox, ZPlus

CONV_LAYERS = (*CONVOLUTIONS, *TRANSPOSED)


@dataclass(frozen=True)
class First:
    """Composite key: the first module of `types` to run in the forward pass."""

    types: tuple[type, ...]


def first(*types: type) -> First:
    """Composite key for the first layer, in EXECUTION order, among modules of `types`:

    >>> {fattr.lrp.first(nn.Conv2d): ZBox(-3, 3), nn.Conv2d: Gamma(), nn.Linear: Epsilon()}
    """
    flat = tuple(t for group in types for t in (group if isinstance(group, tuple) else (group,)))
    if not flat or not all(isinstance(t, type) and issubclass(t, nn.Module) for t in flat):
        raise FattrTypeError(f"lrp: first(...) takes nn.Module types, got {types!r}.")
    return First(flat)


Key = Union[type, tuple, str, First]
Composite = Mapping[Key, Union[Rule, None]]


def base(stabilizer: float = 1e-6) -> dict[Key, Rule]:
    """zennit's base rules, shared by every composite (activations include those of
    transformers and timm), and FrozenStd for LayerNorm (ConvNeXt's LayerNorm2d, which
    zennit's composites leave without a rule)."""
    # (nn.LayerNorm,), not nn.LayerNorm: `{nn.LayerNorm: rule, **composite}` keeps `rule`
    return {activation_types(): Pass(), (Sum, *AVERAGE_POOLS): Norm(stabilizer),
            BATCHNORMS: Pass(), (nn.LayerNorm,): FrozenStd(stabilizer)}


def epsilon(epsilon: float = 1e-6, stabilizer: float = 1e-6) -> dict[Key, Rule]:
    """Epsilon for every Linear and convolution."""
    return {LINEAR_LAYERS: Epsilon(epsilon), **base(stabilizer)}


def epsilon_plus(epsilon: float = 1e-6, stabilizer: float = 1e-6) -> dict[Key, Rule]:
    """ZPlus for convolutions, Epsilon for Linear layers."""
    return {CONV_LAYERS: ZPlus(stabilizer), nn.Linear: Epsilon(epsilon), **base(stabilizer)}


def epsilon_plus_flat(epsilon: float = 1e-6, stabilizer: float = 1e-6) -> dict[Key, Rule]:
    """epsilon_plus with Flat for the first Linear or convolution."""
    return {First(LINEAR_LAYERS): Flat(stabilizer), **epsilon_plus(epsilon, stabilizer)}


def epsilon_gamma_box(low: Any = None, high: Any = None, epsilon: float = 1e-6,
                      gamma: float = 0.25, stabilizer: float = 1e-6) -> dict[Key, Rule]:
    """ZBox(low, high) for the first convolution, Gamma for the others, Epsilon for Linear."""
    if low is None or high is None:
        raise FattrError("lrp: the epsilon_gamma_box composite needs the input's bounds: pass "
                         "low= and high= (numbers or tensors broadcastable to x, e.g. the "
                         "normalized images of pixel values 0 and 1).")
    return {First(CONV_LAYERS): ZBox(low, high, stabilizer), CONV_LAYERS: Gamma(gamma, stabilizer),
            nn.Linear: Epsilon(epsilon), **base(stabilizer)}


def epsilon_alpha2_beta1(epsilon: float = 1e-6, stabilizer: float = 1e-6) -> dict[Key, Rule]:
    """AlphaBeta(2, 1) for convolutions, Epsilon for Linear layers."""
    return {CONV_LAYERS: AlphaBeta(2.0, 1.0, stabilizer), nn.Linear: Epsilon(epsilon),
            **base(stabilizer)}


def epsilon_alpha2_beta1_flat(epsilon: float = 1e-6, stabilizer: float = 1e-6
                              ) -> dict[Key, Rule]:
    """epsilon_alpha2_beta1 with Flat for the first Linear or convolution."""
    return {First(LINEAR_LAYERS): Flat(stabilizer), **epsilon_alpha2_beta1(epsilon, stabilizer)}


epsilon_composite = epsilon  # the composites below take an argument named epsilon


def attnlrp(epsilon: float = 0.0, stabilizer: float = 0.0) -> dict[Key, Rule]:
    """AttnLRP for transformers: the uniform rule on products and attention (AttnLRP for
    nn.MultiheadAttention and for functional attention), FrozenStd for normalizations, Epsilon
    for Linear layers and convolutions, the identity rule (Pass) for activations, Norm for
    sums. Stabilizers default to 0, as lxt's: in the single-backward form nothing divides."""
    return {nn.MultiheadAttention: AttnLRP(epsilon), nn.LayerNorm: FrozenStd(epsilon),
            **epsilon_composite(epsilon, stabilizer)}


def cp_lrp(epsilon: float = 0.0, stabilizer: float = 0.0) -> dict[Key, Rule]:
    """attnlrp with CP-LRP for attention: the attention weights (and the gate of a gated
    product) are constants."""
    return {nn.MultiheadAttention: CPLRP(epsilon), nn.LayerNorm: FrozenStd(epsilon),
            **epsilon_composite(epsilon, stabilizer)}


COMPOSITES: dict[str, Callable[..., dict[Key, Rule]]] = {
    "epsilon": epsilon, "epsilon_plus": epsilon_plus, "epsilon_plus_flat": epsilon_plus_flat,
    "epsilon_gamma_box": epsilon_gamma_box, "epsilon_alpha2_beta1": epsilon_alpha2_beta1,
    "epsilon_alpha2_beta1_flat": epsilon_alpha2_beta1_flat, "attnlrp": attnlrp,
    "cp_lrp": cp_lrp,
}


def resolve(composite: str | Composite, rule_params: Mapping[str, Any]) -> dict[Key, Any]:
    """The composite as a validated mapping, base rules appended."""
    if isinstance(composite, str):
        if composite not in COMPOSITES:
            raise FattrError(f"lrp: unknown composite {composite!r}; choose one of "
                             f"{sorted(COMPOSITES)} or pass a mapping from module type or name "
                             "to rule.")
        build = COMPOSITES[composite]
        accepted = list(inspect.signature(build).parameters)
        unknown = sorted(set(rule_params) - set(accepted))
        if unknown:
            raise FattrError(f"lrp: the {composite} composite takes {accepted}, got unknown "
                             f"rule parameters {unknown}.")
        return build(**rule_params)
    if not isinstance(composite, Mapping):
        raise FattrTypeError(f"lrp: composite must be a name ({sorted(COMPOSITES)}) or a mapping "
                             f"from module type or name to rule, got {type(composite).__name__}.")
    if rule_params:
        raise FattrError(f"lrp: rule parameters {sorted(rule_params)} only apply to named "
                         "composites; set them on the rules of your mapping instead.")
    for key, rule in composite.items():
        if not isinstance(key, (type, tuple, str, First)):
            raise FattrTypeError(f"lrp: composite key {key!r} is not a module type, a tuple of "
                                 "types, a dotted module name or fattr.lrp.first(...).")
        if rule is not None and not callable(getattr(rule, "relevance", None)):
            raise FattrTypeError(f"lrp: composite value for {key!r} must be a rule such as "
                                 f"fattr.lrp.Epsilon() or None (plain gradient), got {rule!r}.")
    return {**composite, **{k: v for k, v in base().items() if k not in composite}}


def _matches(key: Key, name: str, kind: nn.Module | type) -> bool:
    if isinstance(key, str):
        return key == name
    types = key.types if isinstance(key, First) else key
    return issubclass(kind, types) if isinstance(kind, type) else isinstance(kind, types)


MISSING = object()  # no key matched (distinct from None, "keep the plain gradient")


@dataclass(frozen=True)
class Choice:
    """The rule a module gets: `rule`, or `first_rule` when it is the first module of
    `first_key`'s types to run. `rule` is MISSING when only a `first(...)` key matched."""

    rule: Any
    first_rule: Any = None
    first_key: First | None = None


def choose(composite: Mapping[Key, Any], name: str, kind: nn.Module | type) -> Choice | None:
    """The rule of the first matching key for a module (`kind`: the module, a folded conv's
    conv, or a module type), or None when no key matches."""
    first_key, first_rule = None, None
    for key, value in composite.items():
        if not _matches(key, name, kind):
            continue
        if isinstance(key, First):
            if first_key is None:
                first_key, first_rule = key, value
            continue
        return Choice(value, first_rule, first_key)
    return None if first_key is None else Choice(MISSING, first_rule, first_key)
