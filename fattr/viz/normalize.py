"""From an attribution to a displayable map: channel sum, sign, percentile clipping.

Pure torch (no matplotlib), so `fattr.viz.normalize` and `fattr.viz.text` work without the
plotting extra.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import Tensor

from fattr.errors import FattrError, FattrTypeError

SIGNS = ("all", "positive", "negative", "absolute")


def as_tensor(value: Any, name: str, method: str) -> Tensor:
    """A tensor (detached, float64, on the CPU) from a tensor or a numpy array."""
    if isinstance(value, np.ndarray):
        value = torch.from_numpy(value)
    if not isinstance(value, Tensor):
        raise FattrTypeError(f"{method}: {name} must be a torch.Tensor or numpy array, got "
                             f"{type(value).__name__}.")
    if value.is_complex() or value.dtype == torch.bool:
        raise FattrError(f"{method}: {name} must hold real numbers, got dtype {value.dtype}.")
    value = value.detach().to("cpu", torch.float64)
    if value.numel() and not bool(torch.isfinite(value).all()):
        raise FattrError(f"{method}: {name} contains NaN or Inf.")
    return value


def spatial_map(attribution: Any, method: str = "image") -> Tensor:
    """(H, W), (C, H, W) or (1, C, H, W) -> (H, W), summing the channels (as captum)."""
    given = as_tensor(attribution, "attribution", method)
    a = given[0] if given.ndim == 4 and given.shape[0] == 1 else given
    if a.ndim == 3:
        a = a.sum(0)
    if a.ndim != 2 or a.numel() == 0:
        raise FattrError(f"{method}: attribution must be one map (H, W), (C, H, W) or "
                         f"(1, C, H, W), got shape {tuple(given.shape)}. For a batch, index "
                         "one example or use fattr.viz.grid.")
    return a


def percentile(values: Tensor, q: float) -> Tensor:
    """numpy's default (linear) percentile of all values."""
    ordered = values.flatten().sort().values
    position = torch.tensor(q / 100 * (ordered.numel() - 1), dtype=ordered.dtype)
    low = position.floor().long()
    high = position.ceil().long()
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


def check_sign(sign: str, method: str) -> str:
    if sign not in SIGNS:
        raise FattrError(f"{method}: sign must be one of {', '.join(SIGNS)}, got {sign!r}.")
    return sign


def check_percentile(clip_percentile: float, method: str) -> float:
    if isinstance(clip_percentile, bool) or not isinstance(clip_percentile, (int, float)) or \
            not 0 < clip_percentile <= 100:
        raise FattrError(f"{method}: clip_percentile must be a number in (0, 100], got "
                         f"{clip_percentile!r}.")
    return float(clip_percentile)


def normalize(attribution: Any, sign: str = "all", clip_percentile: float = 99.0, *,
              method: str = "normalize") -> Tensor:
    """An attribution as a map in [-1, 1] (sign="all") or [0, 1] (the others).

        v = the chosen part of a (all: a; positive: max(a, 0); negative: max(-a, 0);
            absolute: |a|);   map = clip(v / percentile(|v|, clip_percentile), -1, 1)

    Channels are summed first ((C, H, W) -> (H, W)); 1-D attributions (tokens) stay 1-D. The
    clipping scale is numpy's percentile of |v| (PAIR's convention); captum's `outlier_perc`
    clips where the cumulative sum of sorted |v| reaches the percentile instead, which clips
    fewer values. A zero map stays zero.

    Returns a float64 CPU tensor.
    """
    check_sign(sign, method)
    clip_percentile = check_percentile(clip_percentile, method)
    a = as_tensor(attribution, "attribution", method)
    if a.ndim != 1:
        a = spatial_map(a, method)
    if sign == "positive":
        a = a.clamp(min=0)
    elif sign == "negative":
        a = (-a).clamp(min=0)
    elif sign == "absolute":
        a = a.abs()
    scale = percentile(a.abs(), clip_percentile)
    if scale <= 0:
        return torch.zeros_like(a)
    return (a / scale).clamp(-1 if sign == "all" else 0, 1)
