"""Baselines (references) for path and difference methods."""

from __future__ import annotations

import math
import numbers

import torch
from torch import Tensor

from fattr.core.checks import check_broadcasts, host_values
from fattr.core.inputs import per_input
from fattr.errors import FattrError, FattrTypeError

BaselineSpec = Tensor | float | int | None


def check_finite(value: Tensor | float, method: str, name: str) -> None:
    """A reference must be finite: a NaN or Inf baseline gives a NaN map."""
    if isinstance(value, Tensor):
        if not (value.is_floating_point() or value.is_complex()):
            return
        values = host_values(value)  # None while torch.compile traces: no check, no sync
        finite = values is None or not values.numel() or bool(torch.isfinite(values).all())
    else:
        finite = math.isfinite(value)
    if not finite:
        raise FattrError(f"{method}: {name} contains NaN or Inf, which makes every attribution "
                         "NaN. Pass a finite reference (None for zeros, a number, or a tensor).")


def baseline_like(baseline: BaselineSpec, x: Tensor, method: str, name: str = "baseline") -> Tensor:
    """`baseline` as a tensor broadcast to x's shape: None gives zeros, a number a constant,
    a tensor must broadcast to x (per example (B, ...) or shared (...))."""
    if baseline is None:
        return torch.zeros_like(x)
    if isinstance(baseline, numbers.Real) and not isinstance(baseline, bool):
        check_finite(float(baseline), method, name)
        return torch.full_like(x, float(baseline))
    if not isinstance(baseline, Tensor):
        raise FattrTypeError(f"{method}: {name} must be None, a number or a tensor broadcastable "
                             f"to x, got {type(baseline).__name__}.")
    check_broadcasts(baseline, x.shape, name, method, "x",
                     f"Pass one baseline per example {tuple(x.shape)}, one shared baseline "
                     f"{tuple(x.shape[1:])}, or a number.")
    check_finite(baseline, method, name)
    return baseline.to(dtype=x.dtype, device=x.device).expand(x.shape)


def baseline_distribution(baselines: Tensor | None, x: Tensor, method: str) -> Tensor:
    """A set of N baselines (N, *x.shape[1:]) to draw from (GradientSHAP, DeepLiftShap)."""
    if baselines is None:
        return torch.zeros_like(x[:1])
    if isinstance(baselines, numbers.Real) and not isinstance(baselines, bool):
        check_finite(float(baselines), method, "baselines")
        return torch.full_like(x[:1], float(baselines))
    if not isinstance(baselines, Tensor) or baselines.ndim != x.ndim or \
            baselines.shape[1:] != x.shape[1:] or baselines.shape[0] == 0:
        got = tuple(baselines.shape) if isinstance(baselines, Tensor) else type(baselines).__name__
        raise FattrError(
            f"{method}: baselines must be a distribution of shape (N, *{tuple(x.shape[1:])}) with "
            f"N >= 1 (one row per reference input), got {got}.")
    check_finite(baselines, method, "baselines")
    return baselines.to(dtype=x.dtype, device=x.device)


def _is_single_spec(value: object) -> bool:
    return not isinstance(value, tuple)


def baselines_for(baseline: BaselineSpec | tuple, inputs: tuple[Tensor, ...], method: str,
                  name: str = "baseline") -> tuple[Tensor, ...]:
    """One baseline per input, each broadcast to its input: for several inputs, a tuple with one
    entry per input, or None / a number for all of them."""
    if len(inputs) > 1 and isinstance(baseline, Tensor):
        raise FattrError(f"{method}: x is a tuple of {len(inputs)} inputs, so {name} must be a "
                         f"tuple with one {name} per input (or None or a number for all), got "
                         f"one tensor of shape {tuple(baseline.shape)}.")
    specs = per_input(baseline, len(inputs), name, method, atom=_is_single_spec)
    where = (lambda i: name) if len(inputs) == 1 else (lambda i: f"{name}[{i}]")
    return tuple(baseline_like(spec, x, method, where(i))
                 for i, (spec, x) in enumerate(zip(specs, inputs)))


def distributions_for(baselines: Tensor | tuple | None, inputs: tuple[Tensor, ...],
                      method: str) -> tuple[Tensor, ...]:
    """One reference distribution (N, ...) per input, all with the same N."""
    if len(inputs) > 1 and isinstance(baselines, Tensor):
        raise FattrError(f"{method}: x is a tuple of {len(inputs)} inputs, so baselines must be "
                         "a tuple with one distribution (N, ...) per input, got one tensor.")
    specs = per_input(baselines, len(inputs), "baselines", method, atom=_is_single_spec)
    pools = tuple(baseline_distribution(spec, x, method) for spec, x in zip(specs, inputs))
    counts = {p.shape[0] for p in pools}
    if len(counts) > 1:
        raise FattrError(f"{method}: the baseline distributions have {sorted(counts)} rows; every "
                         "input needs the same number N of references (row n of each input "
                         "together is one reference).")
    return pools
