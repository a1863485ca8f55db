"""Chunked evaluation: the one helper every many-evaluation method uses for `batch_size`.

Rows (path points, noisy copies, perturbed inputs) are sent through `fn` at most `batch_size`
at a time. Results are concatenated, or summed into segments (one per example) as they come,
so a 50-step path never holds 50 copies of the gradient.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor

from fattr.errors import FattrError


def check_batch_size(batch_size: int | None, method: str) -> int | None:
    if batch_size is None:
        return None
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise FattrError(f"{method}: batch_size must be a positive int (the most model inputs "
                         f"per forward call) or None for all at once, got {batch_size!r}.")
    return batch_size


# The default chunk (`batch_size=None` where a method says so): model inputs per forward call.
# On the CPU a forward pass is fastest at a few hundred thousand input elements per call
# (no_grad, one thread, relative to 4 rows a call: torchvision resnet18 0.55 at 64 rows of
# 64x64 and 0.24 at 128-256 rows of 32x32, best at 4-8 rows of 224x224; a small CNN (16 and 32
# channels) at 32x32 0.78 at 32 rows, 0.86 at 128, 1.19 at 256; a whole batch of 512 is slower
# for both); an accelerator wants large calls. Rows are capped so that models with small inputs
# (token ids) stay bounded. Measured on a shared 2-core machine: see docs/performance.md.
ELEMENTS_PER_CALL = {"cpu": 2**19}
ELEMENTS_PER_CALL_ELSEWHERE = 2**24
ROWS_PER_CALL = {"cpu": 128}
ROWS_PER_CALL_ELSEWHERE = 1024


def default_batch_size(inputs: tuple[Tensor, ...]) -> int:
    """The chunk for `batch_size=None`: as many rows (one example's inputs each) as fit in
    `ELEMENTS_PER_CALL` input elements for the inputs' device, at least 1, at most
    `ROWS_PER_CALL`."""
    device = inputs[0].device.type
    per_row = max(sum(t[0].numel() for t in inputs), 1)
    budget = ELEMENTS_PER_CALL.get(device, ELEMENTS_PER_CALL_ELSEWHERE)
    cap = ROWS_PER_CALL.get(device, ROWS_PER_CALL_ELSEWHERE)
    return max(1, min(budget // per_row, cap))


def row_slices(n: int, batch_size: int | None) -> list[slice]:
    step = n if batch_size is None else batch_size
    return [slice(i, min(i + step, n)) for i in range(0, n, max(step, 1))]


def chunked(fn: Callable[..., Any], *rows: Tensor, batch_size: int | None,
            segments: tuple[Tensor, int] | None = None) -> Any:
    """Apply `fn` to aligned row chunks of `rows` (at most `batch_size` rows each).

    `fn` returns a tensor or a tuple of tensors (one per model input). Without `segments`, the
    per-chunk results are concatenated along the first axis. With `segments=(index, size)`, row r
    of each result is added into slot `index[r]` of a `size`-row output instead.
    """
    n = rows[0].shape[0]
    slices = row_slices(n, batch_size)
    if segments is None:
        parts = [fn(*(r[s] for r in rows)) for s in slices]
        if len(parts) == 1:
            return parts[0]
        if isinstance(parts[0], tuple):
            return tuple(torch.cat(column) for column in zip(*parts))
        return torch.cat(parts)
    index, size = segments
    total = None
    for s in slices:
        part = fn(*(r[s] for r in rows))
        many = isinstance(part, tuple)
        leaves = part if many else (part,)
        if total is None:
            total = [p.new_zeros((size, *p.shape[1:])) for p in leaves]
        total = [t.index_add(0, index[s], p) for t, p in zip(total, leaves)]
    return tuple(total) if many else total[0]


def path_sum(contribution: Callable[[Tensor, Tensor], Any], steps: int, batch: int,
             batch_size: int | None, device: torch.device) -> Any:
    """sum over s of `contribution(step, example)` for every example: the one primitive under
    every path and sample average (IG, GradientSHAP, Blur IG, layer paths, DeepLiftShap, smooth
    CAMs).

    Rows are the (step, example) pairs, step-major (row r is step r // batch of example
    r % batch). Each chunk of at most `batch_size` rows gets its step and example indices and
    builds its own model inputs, so memory is flat in `steps`; `contribution` returns one value
    per row (a tensor or a tuple of tensors, one per input) and the values are summed by example.
    """
    example = torch.arange(batch, device=device).repeat(steps)
    step = torch.arange(steps, device=device).repeat_interleave(batch)
    return chunked(contribution, step, example, batch_size=batch_size, segments=(example, batch))
