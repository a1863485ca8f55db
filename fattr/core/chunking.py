"""Chunked evaluation: the one helper every many-evaluation method uses for `batch_size`.

Rows (path points, noisy copies, perturbed inputs) are sent through `fn` at most `batch_size`
at a time. Results are concatenated, or summed into segments (one per example) as they come,
so a 50-step path never holds 50 copies of the gradient.
"""

from __future__ import annotations

from collections.abc import Callable

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


def row_slices(n: int, batch_size: int | None) -> list[slice]:
    step = n if batch_size is None else batch_size
    return [slice(i, min(i + step, n)) for i in range(0, n, max(step, 1))]


def chunked(fn: Callable[..., Tensor], *rows: Tensor, batch_size: int | None,
            segments: tuple[Tensor, int] | None = None) -> Tensor:
    """Apply `fn` to aligned row chunks of `rows` (at most `batch_size` rows each).

    Without `segments`, the per-chunk results are concatenated along the first axis. With
    `segments=(index, size)`, row r of each result is added into slot `index[r]` of a
    `size`-row output instead.
    """
    n = rows[0].shape[0]
    slices = row_slices(n, batch_size)
    if segments is None:
        parts = [fn(*(r[s] for r in rows)) for s in slices]
        return parts[0] if len(parts) == 1 else torch.cat(parts)
    index, size = segments
    total = None
    for s in slices:
        part = fn(*(r[s] for r in rows))
        if total is None:
            total = part.new_zeros((size, *part.shape[1:]))
        total = total.index_add(0, index[s], part)
    return total
