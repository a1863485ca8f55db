"""Feature groups: which input elements are perturbed together (the call's `feature_mask`).

A feature mask holds one integer id per input element, broadcastable to x: per example
(B, ...) or shared ((...) or (1, ...)). Every distinct id that occurs is one feature; ids need
not be contiguous or start at 0 (captum shifts them to start at 0 and keeps empty ids in between
as features with zero effect; the attributions are the same). Features are numbered 0..F-1 in
the sorted order of their ids; per-example masks share one numbering (the union of their ids),
and an id absent from an example is a feature without effect there. Without a mask every
element is its own feature.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from fattr.core.checks import check_broadcasts, concrete
from fattr.errors import FattrError


@dataclass(frozen=True)
class Features:
    """Dense feature ids: `index` (1 or B, d) for the d elements of each example, F = `count`."""

    index: Tensor
    count: int
    shape: torch.Size

    def of(self, example: Tensor) -> Tensor:
        """The (N, d) feature ids of the examples of N perturbed rows."""
        if self.index.shape[0] == 1:
            return self.index.expand(example.shape[0], -1)
        return self.index[example]

    def removed(self, keep: Tensor, example: Tensor) -> Tensor:
        """Element mask of the features NOT kept: keep (N, F) bool -> (N, *x.shape[1:])."""
        return ~keep.gather(1, self.of(example)).reshape(-1, *self.shape[1:])

    def expand(self, phi: Tensor) -> Tensor:
        """One value per feature (B, F) -> one value per element, shaped like x."""
        return phi.gather(1, self.index.expand(phi.shape[0], -1)).reshape(phi.shape[0],
                                                                         *self.shape[1:])

    def sums(self, values: Tensor) -> Tensor:
        """Per-feature sums of element values (B, *x.shape[1:]) -> (B, F)."""
        flat = values.reshape(values.shape[0], -1)
        total = flat.new_zeros((flat.shape[0], self.count))
        return total.scatter_add(1, self.index.expand(flat.shape[0], -1), flat)


def feature_groups(feature_mask: Tensor | None, x: Tensor, method: str) -> Features:
    """Validate a call's `feature_mask` against x and number its features densely."""
    elements = x[0].numel()
    if elements == 0:
        raise FattrError(f"{method}: x of shape {tuple(x.shape)} has no elements per example, so "
                         "there is nothing to perturb.")
    if feature_mask is None:
        index = torch.arange(elements, device=x.device).unsqueeze(0)
        return Features(index, elements, x.shape)
    if not isinstance(feature_mask, Tensor):
        raise FattrError(f"{method}: feature_mask must be an integer tensor of feature ids "
                         f"broadcastable to x, got {type(feature_mask).__name__}.")
    if feature_mask.is_floating_point() or feature_mask.is_complex() or \
            feature_mask.dtype == torch.bool:
        raise FattrError(f"{method}: feature_mask must hold integer feature ids, got dtype "
                         f"{feature_mask.dtype}. Convert it with feature_mask.long().")
    check_broadcasts(feature_mask, x.shape, "feature_mask", method, "x",
                     f"Pass one mask per example {tuple(x.shape)}, one shared mask "
                     f"{tuple(x.shape[1:])}, or any shape that broadcasts, such as (1, 1, H, W) "
                     "for every channel of an image.")
    # The feature count fixes shapes, so it is read from the values (under vmap over masks: the
    # ids of all of them); the element-to-feature map keeps the mask's own (maybe vmapped) form.
    ids = torch.unique(concrete(feature_mask).to(x.device))
    mask = feature_mask.to(x.device)
    mask = mask.reshape((1,) * (x.ndim - mask.ndim) + tuple(mask.shape))
    mask = mask.expand(mask.shape[0], *x.shape[1:]).reshape(mask.shape[0], elements)
    return Features(torch.searchsorted(ids, mask.contiguous()), ids.numel(), x.shape)
