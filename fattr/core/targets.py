"""Target selection: turns a model output into one scalar per example.

Forms (API.md, "Targets"): an int picks `out[:, t]` (on a model that declares `flat_index`,
such as `to_layer`, an int is the flattened index over all non-batch axes); a tuple picks
`out[(slice(None), *t)]`; a 1-D integer tensor or list of length B picks one index per example
(a (B, d) tensor picks a d-dimensional index per example); `None` needs an output that is
already one scalar per example ((B,) or (B, 1)); a callable `out -> Tensor(N,)` is any
row-wise objective. Wrong shapes or out-of-range indices raise; nothing is truncated silently.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Callable, Sequence
from typing import Union

import torch
from torch import Tensor

from fattr.core.checks import host_values
from fattr.errors import FattrError, FattrTypeError

TargetSpec = Union[int, tuple, Sequence[int], Tensor, Callable[[Tensor], Tensor], None]


class Target:
    """A validated target for a batch of `batch` examples.

    `select(out, rows)` gives one scalar per row of `out`; `rows` maps each row to its example
    (for path and noise methods that evaluate many rows per example), default one row each.
    """

    def __init__(self, spec: TargetSpec, batch: int, device: torch.device, method: str, *,
                 flat_index: bool = False):
        self.method = method
        self.batch = batch
        self.flat_index = flat_index  # an int indexes all non-batch axes flattened (neurons)
        self._range_checked = False
        if spec is None or (callable(spec) and not isinstance(spec, Tensor)):
            self.spec = spec
        elif isinstance(spec, bool):
            raise FattrError(f"{method}: target must be an int, tuple, index tensor, list, "
                             f"callable or None; got the bool {spec}.")
        elif isinstance(spec, numbers.Integral):
            self.spec = int(spec)
        elif isinstance(spec, tuple):
            if not all(isinstance(i, numbers.Integral) for i in spec):
                raise FattrError(f"{method}: a tuple target must hold ints (one index per "
                                 f"output axis after the batch axis), got {spec!r}.")
            self.spec = tuple(int(i) for i in spec)
        else:
            self.spec = self._per_example(spec, device)

    def _per_example(self, spec: object, device: torch.device) -> Tensor:
        method, batch = self.method, self.batch
        if isinstance(spec, Sequence) and not isinstance(spec, str):
            spec = torch.as_tensor(list(spec), device=device)
        if not isinstance(spec, Tensor):
            raise FattrTypeError(f"{method}: target must be an int, tuple, index tensor, list, "
                                 f"callable or None; got {type(spec).__name__}.")
        if spec.is_floating_point() or spec.is_complex() or spec.dtype == torch.bool:
            raise FattrError(f"{method}: a target tensor must hold integer indices, got dtype "
                             f"{spec.dtype}.")
        if spec.ndim not in (1, 2) or spec.shape[0] != batch:
            raise FattrError(
                f"{method}: a per-example target needs one index per example, shape ({batch},) "
                f"(or ({batch}, d) for d-dimensional outputs), got shape {tuple(spec.shape)}. "
                "For several targets per example use torch.func.vmap over a (K, B) target.")
        return spec.to(device=device, dtype=torch.long)

    def select(self, out: Tensor, rows: Tensor | None = None) -> Tensor:
        """One scalar per row of `out` (shape (N,))."""
        if not isinstance(out, Tensor):
            raise FattrError(f"{self.method}: the model returned {type(out).__name__}, not a "
                             "tensor. Pass output=... to pick the tensor (for example "
                             "output=lambda o: o.logits for HuggingFace models).")
        spec = self.spec
        if spec is None:
            chosen = out[:, 0] if out.ndim == 2 and out.shape[1] == 1 else out
            what = "None"
        elif isinstance(spec, int) and self.flat_index and out.ndim > 2:
            flat = out.flatten(1)
            self._check_index((spec,), flat)
            chosen, what = flat[:, spec], f"{spec}"
        elif isinstance(spec, int):
            self._check_index((spec,), out)
            chosen, what = out[:, spec], f"{spec}"
        elif isinstance(spec, tuple):
            self._check_index(spec, out)
            chosen, what = out[(slice(None), *spec)], f"{spec}"
        elif isinstance(spec, Tensor):
            index = spec if rows is None else spec[rows]
            chosen, what = self._gather(out, index), "an index tensor"
        else:
            chosen, what = spec(out), "the callable"
            if not isinstance(chosen, Tensor):
                raise FattrTypeError(f"{self.method}: a callable target must return a tensor, "
                                     f"got {type(chosen).__name__}.")
        if chosen.shape != out.shape[:1]:
            raise FattrError(
                f"{self.method}: target {what} selects shape {self._shape(chosen)} from the "
                f"output of shape {self._shape(out)}, but one scalar per example is needed, "
                f"shape ({self.batch},). Pass an index for every output axis (an int or a "
                "tuple), or a callable that reduces, e.g. lambda out: out[:, c].sum((1, 2)).")
        return chosen

    def _shape(self, t: Tensor) -> tuple[int, ...]:
        """A shape as the user sees it: with the batch size, not the internal row count."""
        return (self.batch, *t.shape[1:])

    def _check_index(self, index: tuple[int, ...], out: Tensor) -> None:
        if len(index) > out.ndim - 1:
            raise FattrError(f"{self.method}: target {index} has {len(index)} indices but the "
                             f"output of shape {self._shape(out)} has {out.ndim - 1} axes after "
                             "the batch axis.")
        for i, size in zip(index, out.shape[1:]):
            if not -size <= i < size:
                raise FattrError(f"{self.method}: target {index if len(index) > 1 else i} is "
                                 f"out of range for the output of shape {self._shape(out)}.")

    def _gather(self, out: Tensor, index: Tensor) -> Tensor:
        depth = 1 if index.ndim == 1 else index.shape[1]
        if out.ndim < depth + 1:
            raise FattrError(f"{self.method}: a target of {depth} index per example does not "
                             f"fit the output of shape {self._shape(out)}.")
        sizes = torch.tensor(out.shape[1:1 + depth], device=index.device)
        if not self._range_checked:
            values = host_values(index)  # None under torch.compile: no check, no sync
            outside = values is not None and values.numel() and \
                bool(((values < -sizes) | (values >= sizes)).any())
            if outside:
                raise FattrError(f"{self.method}: target indices {values.tolist()} are out of "
                                 f"range for the output of shape {self._shape(out)}.")
            self._range_checked = True
        index = index.reshape(index.shape[0], depth)
        index = torch.where(index < 0, index + sizes, index)
        flat = out.reshape(out.shape[0], -1, *out.shape[1 + depth:])
        dims = out.shape[1:1 + depth]
        strides = torch.tensor([math.prod(dims[i + 1:]) for i in range(depth)], device=index.device)
        position = (index * strides).sum(1)
        view = position.reshape(-1, *([1] * (flat.ndim - 1))).expand(-1, 1, *flat.shape[2:])
        return flat.gather(1, view).squeeze(1)


def tile_target(spec: TargetSpec, times: int) -> TargetSpec:
    """The target for `times` stacked copies of the batch (sample-major rows)."""
    if isinstance(spec, Tensor):
        return spec.repeat(times, *([1] * (spec.ndim - 1)))
    return spec
