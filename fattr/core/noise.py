"""Noise averages: attributions of noisy copies of the input (SmoothGrad and friends).

Noise is drawn once, before any evaluation, from the caller's generator, so the result does
not depend on `batch_size`. Copies are folded into the batch axis (faster than `vmap` on batched
models); wrapped per-example attribution functions are mapped with `vmap` instead.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import torch
from torch import Tensor
from torch.func import vmap

from fattr.core.chunking import chunked
from fattr.core.targets import TargetSpec, tile_target


def relative_noise(x: Tensor, samples: int, stdev: float, generator: torch.Generator | None,
                   batched: bool = True) -> Tensor:
    """N(0, (stdev * (max - min))^2) noise per example, shape (samples, *x.shape)."""
    flat = x.detach().flatten(1) if batched else x.detach().reshape(1, -1)
    span = flat.amax(1) - flat.amin(1)
    sigma = (stdev * span).reshape(-1, *([1] * (x.ndim - 1))) if batched else stdev * span
    noise = torch.randn((samples, *x.shape), generator=generator, dtype=x.dtype, device=x.device)
    return noise * sigma


def attribute_samples(attr_fn: Callable[..., Tensor], params: Mapping[str, Tensor],
                      samples: Tensor, target: TargetSpec, per_call: Mapping[str, Any],
                      batch_size: int | None) -> Tensor:
    """attr_fn on every copy of samples (S, B, ...) -> (S, B, ...), `batch_size` copies a call.

    Per-call arguments that `attr_fn` declares per example (`attr_fn.batched_kwargs`) and that
    hold one row per example are repeated along with x; others pass unchanged.
    """
    if getattr(attr_fn, "per_example", False):
        mapped = vmap(lambda xs: attr_fn(params, xs, target, **per_call), chunk_size=batch_size)
        return mapped(samples)
    copies, batch = samples.shape[:2]
    rows = samples.reshape(copies * batch, *samples.shape[2:])
    tile = lambda v: v.repeat(copies, *([1] * (v.ndim - 1)))
    declared = getattr(attr_fn, "batched_kwargs", ())
    per_row = {k: tile(v) for k, v in per_call.items() if k in declared
               and isinstance(v, Tensor) and v.ndim == rows.ndim and v.shape[0] == batch}
    shared = {k: v for k, v in per_call.items() if k not in per_row}
    targets = tile_target(target, copies)
    names = list(per_row)

    def chunk(inputs: Tensor, index: Tensor, *values: Tensor) -> Tensor:
        chunk_target = targets[index] if isinstance(targets, Tensor) else targets
        return attr_fn(params, inputs, chunk_target, **shared, **dict(zip(names, values)))

    index = torch.arange(rows.shape[0], device=rows.device)
    result = chunked(chunk, rows, index, *per_row.values(), batch_size=batch_size)
    return result.reshape(copies, batch, *result.shape[1:])
