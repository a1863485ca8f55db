"""What every metric shares: validation at the boundary, ranks, and chunked target scores.

A metric sees its model through `fattr.core.model.as_model` and its target through
`fattr.core.targets.Target`, like every attribution method. For a per-example model
(`fattr.per_example(f)`) the metric takes ONE example (no batch axis) and returns one value
instead of one per example; inside, everything runs batched.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from fattr.core.checks import check_eval_mode, check_input, concrete
from fattr.core.chunking import chunked
from fattr.core.gradients import fold
from fattr.core.model import Model, Params
from fattr.core.targets import Target, TargetSpec
from fattr.errors import FattrError, FattrTypeError


@dataclass(frozen=True)
class Batch:
    """One metric call after validation: a batched `x`, its `Target`, and whether the caller
    passed a single example (per-example model) whose batch axis must come off the result."""

    x: Tensor
    target: Target
    single: bool

    @property
    def size(self) -> int:
        return self.x.shape[0]

    def batched(self, t: Tensor) -> Tensor:
        return t.unsqueeze(0) if self.single else t

    def result(self, values: Tensor) -> Tensor:
        """(..., B) per-example values as the caller expects them."""
        return values[..., 0] if self.single else values


def prepare(model: Model, x: Tensor, target: TargetSpec) -> Batch:
    """Validate x (finite floats), the eval mode and the target; add the batch axis if needed."""
    method = model.method
    check_input(x, method)
    check_eval_mode(model.module, method)
    single = model.per_example
    if single:
        x = x.unsqueeze(0)
        if isinstance(target, Tensor):
            target = target.unsqueeze(0)
    return Batch(x, model.target(target, x), single)


def check_like(t: object, x: Tensor, method: str, name: str = "attribution", *,
               broadcast: bool = False, batched: bool = True) -> Tensor:
    """`t` must be a finite tensor shaped like x; with `broadcast`, axes after the batch axis may
    be 1 (a (B, 1, H, W) map for (B, C, H, W) images)."""
    if not isinstance(t, Tensor):
        raise FattrTypeError(f"{method}: {name} must be a torch.Tensor shaped like x "
                             f"{tuple(x.shape)}, got {type(t).__name__}.")
    first = 1 if batched else 0
    fits = t.ndim == x.ndim and t.shape[:first] == x.shape[:first] and all(
        a == s or (broadcast and a == 1) for a, s in zip(t.shape[first:], x.shape[first:]))
    if not fits:
        also = (" (or with size-1 axes that broadcast over x, such as a (B, 1, H, W) map for "
                "(B, C, H, W) images)") if broadcast else ""
        raise FattrError(f"{method}: {name} has shape {tuple(t.shape)} but x has shape "
                         f"{tuple(x.shape)}; pass one {name} per example shaped like x{also}.")
    if t.is_floating_point():
        return check_finite(t, method, name)
    return t if t.dtype == torch.bool else t.to(x.dtype)


def check_finite(t: Tensor, method: str, name: str) -> Tensor:
    values = concrete(t)
    if values.numel() and not bool(torch.isfinite(values).all()):
        raise FattrError(f"{method}: {name} contains NaN or Inf; compute it again or clean it "
                         "(torch.nan_to_num) before evaluating it.")
    return t


def check_maps(attribution: object, method: str) -> Tensor:
    """Attribution maps (B, ...) with at least one axis after the batch axis."""
    if not isinstance(attribution, Tensor) or attribution.ndim < 2 or \
            not attribution.is_floating_point():
        got = (f"shape {tuple(attribution.shape)} and dtype {attribution.dtype}"
               if isinstance(attribution, Tensor) else type(attribution).__name__)
        raise FattrError(f"{method}: attribution must be a floating-point tensor (B, ...) with a "
                         f"batch axis and at least one feature axis, got {got}. For one map "
                         "pass a[None].")
    return check_finite(attribution, method, "attribution")


def check_attr_fn(attr_fn: object, method: str) -> Callable[..., Tensor]:
    if not callable(attr_fn):
        raise FattrTypeError(f"{method}: attr_fn must be an attribution function such as "
                             f"fattr.saliency(f), got {type(attr_fn).__name__}.")
    return attr_fn


def ranks(values: Tensor, descending: bool = True) -> Tensor:
    """The rank of every element within its example (0 = largest when `descending`); ties keep
    their flattened order. Shape and layout as `values` (B, ...)."""
    flat = values.detach().flatten(1)
    order = flat.argsort(dim=1, descending=descending, stable=True)
    position = torch.arange(flat.shape[1], device=flat.device).expand_as(order)
    return torch.empty_like(order).scatter(1, order, position).reshape(values.shape)


def removal_counts(features: int, steps: int, device: torch.device) -> Tensor:
    """How many features are removed at each of the steps + 1 points: floor(i * n / steps)."""
    return torch.arange(steps + 1, device=device) * features // steps


def stacked_scores(model: Model, params: Params, points: Tensor, target: Target,
                   batch_size: int | None) -> Tensor:
    """The target score of every copy in points (S, B, ...) -> (S, B), `batch_size` rows a call."""
    rows, example = fold(points)
    chosen = chunked(lambda inputs, index: target.select(model(params, inputs), index),
                     rows, example, batch_size=batch_size)
    return chosen.reshape(points.shape[:2])


def trapezoid(curve: Tensor) -> Tensor:
    """Area under a curve sampled at S evenly spaced points of [0, 1]: (S, B) -> (B,)."""
    return torch.trapezoid(curve, dx=1.0 / (curve.shape[0] - 1), dim=0)


def safe_divide(num: Tensor, den: Tensor) -> Tensor:
    """num / den with 0 where den == 0 (also safe for gradients)."""
    nonzero = den != 0
    return torch.where(nonzero, num / torch.where(nonzero, den, torch.ones_like(den)),
                       torch.zeros_like(num))


def call_attribution(attr_fn: Callable[..., Tensor], params: Params, x: Tensor,
                     target: TargetSpec, per_call: dict[str, Any], single: bool) -> Tensor:
    """attr_fn on a batch x (B, ...), passing x as the caller would (one example if `single`)."""
    if single:
        target = target.squeeze(0) if isinstance(target, Tensor) else target
        return attr_fn(params, x.squeeze(0), target, **per_call).unsqueeze(0)
    return attr_fn(params, x, target, **per_call)


def check_per_example(attr_fn: Callable[..., Tensor], single: bool, method: str) -> None:
    """The attribution function must take x in the same form (batched or one example) as f."""
    if bool(getattr(attr_fn, "per_example", False)) != single:
        model_form = "per-example" if single else "batched"
        raise FattrError(f"{method}: the model is {model_form} but attr_fn is not; build both "
                         "from the same model function (wrap both, or neither, in "
                         "fattr.per_example).")
