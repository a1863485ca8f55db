"""Noise averages: attributions of noisy copies of the input (SmoothGrad and friends).

Noise is drawn once, before any evaluation, from the caller's generator, so the result does
not depend on `batch_size`. Copies are folded into the batch axis (faster than `vmap` on batched
models); wrapped per-example attribution functions are mapped with `vmap` instead.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import torch
from einops import rearrange
from torch import Tensor
from torch.func import vmap
from torch.utils._pytree import tree_map

from fattr.core.call import contract
from fattr.core.chunking import chunked
from fattr.core.inputs import Inputs, repeat_rows
from fattr.core.targets import TargetSpec, tile_target


def relative_noise(x: Tensor, samples: int, stdev: float, generator: torch.Generator | None,
                   batched: bool = True) -> Tensor:
    """N(0, (stdev * (max - min))^2) noise per example, shape (samples, *x.shape). The scale
    is part of the method, so a derivative in x goes through it too."""
    flat = x.reshape(x.shape[0], -1) if batched else x.reshape(1, -1)
    span = flat.amax(1) - flat.amin(1)
    sigma = (stdev * span).reshape(-1, *([1] * (x.ndim - 1))) if batched else stdev * span
    noise = torch.randn((samples, *x.shape), generator=generator, dtype=x.dtype, device=x.device)
    return noise * sigma


def _tile(value: Any, batch: int, copies: int) -> Any:
    """Per-example tensors in `value` (any nesting; first axis `batch`) repeated for `copies`
    stacked copies of the batch; anything else unchanged."""
    per_row = lambda v: isinstance(v, Tensor) and v.ndim > 0 and v.shape[0] == batch
    return tree_map(lambda v: _Rows(repeat_rows(v, copies)) if per_row(v) else v, value)


def _tile_like(value: Any, rows: Inputs, batch: int, copies: int) -> Any:
    """A per-input argument (a baseline, a mask: one per input, or one for a single input) is
    per example when it has its input's rank and `batch` rows (a shared baseline has one axis
    less), and is then repeated like `_tile`."""
    if isinstance(value, tuple) and len(value) == len(rows):
        return tuple(_tile_like(v, (r,), batch, copies) for v, r in zip(value, rows))
    if isinstance(value, Tensor) and value.ndim == rows[0].ndim and value.shape[0] == batch:
        return _Rows(repeat_rows(value, copies))
    return value


class _Rows:
    """A tiled per-row tensor, to be sliced with the rows of each chunk."""

    def __init__(self, rows: Tensor):
        self.rows = rows


def _take(value: Any, index: Tensor) -> Any:
    """`value` for the rows `index`: tiled tensors sliced, anything else unchanged."""
    return tree_map(lambda v: v.rows[index] if isinstance(v, _Rows) else v, value)


def attribute_samples(attr_fn: Callable[..., Any], params: Mapping[str, Tensor],
                      samples: Inputs, target: TargetSpec, per_call: Mapping[str, Any],
                      batch_size: int | None, single: bool) -> Inputs:
    """attr_fn on every copy of the samples (each input (S, B, ...)) -> one (S, B, ...) per
    input, `batch_size` copies of examples per call.

    Per-call arguments that `attr_fn` declares per example (`contract(attr_fn).batched_kwargs`)
    and per-example extra forward arguments (`model_args`, `model_kwargs`) that hold one row
    per example are repeated along with x; others pass unchanged.
    """
    pack = (lambda values: values[0]) if single else tuple
    as_tuple = (lambda a: (a,)) if single else tuple
    if contract(attr_fn).per_example:
        mapped = vmap(lambda *xs: as_tuple(attr_fn(params, pack(xs), target, **per_call)),
                      chunk_size=batch_size)
        return mapped(*samples)
    copies, batch = samples[0].shape[:2]
    count = copies * batch
    rows = tuple(rearrange(s, "copy b ... -> (copy b) ...") for s in samples)
    declared = contract(attr_fn).batched_kwargs
    tiled = {k: _tile(v, batch, copies) if k in ("model_args", "model_kwargs")
             else _tile_like(v, rows, batch, copies) if k in declared else v
             for k, v in per_call.items()}
    targets = tile_target(target, copies)

    def chunk(index: Tensor) -> Inputs:
        chunk_target = targets[index] if isinstance(targets, Tensor) else targets
        given = {k: _take(v, index) for k, v in tiled.items()}
        return as_tuple(attr_fn(params, pack(tuple(r[index] for r in rows)), chunk_target,
                                **given))

    result = chunked(chunk, torch.arange(count, device=rows[0].device), batch_size=batch_size)
    return tuple(rearrange(r, "(copy b) ... -> copy b ...", copy=copies) for r in result)
