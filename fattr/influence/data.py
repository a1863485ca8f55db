"""Labelled rows for the influence methods: tensors or a DataLoader, in `batch_size` chunks."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from torch import Tensor

from fattr.core.checks import check_input
from fattr.core.chunking import row_slices
from fattr.errors import FattrError, FattrTypeError

Data = Any  # a Tensor of inputs, or a torch DataLoader yielding (x, y) batches


def check_rows(x: Data, y: Tensor | None, name: str, method: str) -> None:
    """Tensors `x` (N, ...) and `y` (N, ...), or a DataLoader `x` of (x, y) batches and y=None."""
    if _is_loader(x):
        if y is not None:
            raise FattrError(f"{method}: {name} is a DataLoader, whose batches are (x, y) pairs, "
                             f"so its labels must be None; got a {type(y).__name__}.")
        return
    check_input(x, method)
    if not isinstance(y, Tensor):
        raise FattrTypeError(f"{method}: the labels for {name} must be a tensor with one row per "
                             f"example ({x.shape[0]} rows), got {type(y).__name__}.")
    if y.ndim == 0 or y.shape[0] != x.shape[0]:
        raise FattrError(f"{method}: {name} has {x.shape[0]} rows but its labels have shape "
                         f"{tuple(y.shape)}; pass one label row per example.")


def chunks(x: Data, y: Tensor | None, batch_size: int | None, method: str,
           ) -> Iterator[tuple[Tensor, Tensor]]:
    """(x, y) chunks of at most `batch_size` rows, in order (a DataLoader's batches are split
    further when larger than `batch_size`)."""
    batches = _loader_batches(x, method) if _is_loader(x) else [(x, y)]
    for bx, by in batches:
        for s in row_slices(bx.shape[0], batch_size):
            yield bx[s], by[s]


def _is_loader(x: object) -> bool:
    return not isinstance(x, Tensor) and hasattr(x, "__iter__") and hasattr(x, "dataset")


def _loader_batches(loader: Any, method: str) -> Iterator[tuple[Tensor, Tensor]]:
    for batch in loader:
        if not (isinstance(batch, (tuple, list)) and len(batch) == 2
                and all(isinstance(t, Tensor) for t in batch)):
            raise FattrError(f"{method}: a DataLoader must yield (x, y) pairs of tensors, got "
                             f"{type(batch).__name__}. Wrap tensors in TensorDataset(x, y).")
        check_rows(batch[0], batch[1], "a DataLoader batch", method)
        yield batch[0], batch[1]
