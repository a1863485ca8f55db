"""Feature groups: which input elements are perturbed together (the call's `feature_mask`).

A feature mask holds one integer id per input element, broadcastable to x: per example
(B, ...) or shared ((...) or (1, ...)). Every distinct id that occurs is one feature; ids need
not be contiguous or start at 0 (captum shifts them to start at 0 and keeps empty ids in between
as features with zero effect; the attributions are the same). Features are numbered 0..F-1 in
the sorted order of their ids; per-example masks share one numbering (the union of their ids),
and an id absent from an example is a feature without effect there. Without a mask every
element is its own feature. For a tuple of inputs there is one mask per input and an id that
occurs in several inputs is ONE feature (captum's rule); internally the features live on the
flattened elements of all inputs, concatenated in input order.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from fattr.core.checks import check_broadcasts, concrete
from fattr.core.inputs import Inputs, per_input, split_flat
from fattr.errors import FattrError, FattrTypeError


@dataclass(frozen=True)
class Features:
    """Dense feature ids over the flattened elements of all inputs (in input order): `index`
    (1 or B, D) for the D elements of each example, F = `count`; `inputs` are the call's
    inputs (their shapes split results back)."""

    index: Tensor
    count: int
    inputs: Inputs

    @property
    def shared(self) -> bool:
        """One feature layout for every example."""
        return self.index.shape[0] == 1

    def of(self, example: Tensor) -> Tensor:
        """The (N, D) feature ids of the examples of N perturbed rows."""
        if self.shared:
            return self.index.expand(example.shape[0], -1)
        return self.index[example]

    def removed(self, keep: Tensor, example: Tensor) -> Tensor:
        """Element mask of the features NOT kept: keep (N, F) bool -> (N, D)."""
        return ~keep.gather(1, self.of(example))

    def expand(self, phi: Tensor) -> Inputs:
        """One value per feature (B, F) -> one value per element of every input (B, ...)."""
        flat = phi.gather(1, self.index.expand(phi.shape[0], -1))
        return split_flat(flat, self.inputs)

    def sums(self, values: Tensor) -> Tensor:
        """Per-feature sums of flat element values (B, D) -> (B, F)."""
        total = values.new_zeros((values.shape[0], self.count))
        return total.scatter_add(1, self.index.expand(values.shape[0], -1), values)


def _mask_ids(feature_mask: object, x: Tensor, method: str, name: str) -> Tensor:
    """One input's mask, validated and broadcast to (1 or B, d) ids."""
    if not isinstance(feature_mask, Tensor):
        raise FattrTypeError(f"{method}: {name} must be an integer tensor of feature ids "
                         f"broadcastable to x, got {type(feature_mask).__name__}.")
    if feature_mask.is_floating_point() or feature_mask.is_complex() or \
            feature_mask.dtype == torch.bool:
        raise FattrError(f"{method}: {name} must hold integer feature ids, got dtype "
                         f"{feature_mask.dtype}. Convert it with feature_mask.long().")
    check_broadcasts(feature_mask, x.shape, name, method, "x",
                     f"Pass one mask per example {tuple(x.shape)}, one shared mask "
                     f"{tuple(x.shape[1:])}, or any shape that broadcasts, such as (1, 1, H, W) "
                     "for every channel of an image.")
    mask = feature_mask.to(x.device)
    mask = mask.reshape((1,) * (x.ndim - mask.ndim) + tuple(mask.shape))
    return mask.expand(mask.shape[0], *x.shape[1:]).reshape(mask.shape[0], -1)


def feature_groups(feature_mask: Tensor | tuple | None, inputs: Inputs,
                   method: str) -> Features:
    """Validate a call's `feature_mask` against the inputs and number its features densely.

    For several inputs the mask is a tuple with one mask per input (or None for every element
    its own feature); ids that occur in several inputs form one feature (captum's rule)."""
    for i, x in enumerate(inputs):
        if x.shape[1:].numel() == 0:
            which = "x" if len(inputs) == 1 else f"x[{i}]"
            raise FattrError(f"{method}: {which} of shape {tuple(x.shape)} has no elements per "
                             "example, so there is nothing to perturb.")
    if feature_mask is None:
        total = sum(x.shape[1:].numel() for x in inputs)
        index = torch.arange(total, device=inputs[0].device).unsqueeze(0)
        return Features(index, total, inputs)
    if len(inputs) > 1 and not isinstance(feature_mask, tuple):
        raise FattrError(f"{method}: x is a tuple of {len(inputs)} inputs, so feature_mask must "
                         "be a tuple with one mask per input (ids shared across inputs form "
                         "one feature).")
    masks = per_input(feature_mask, len(inputs), "feature_mask", method)
    names = ["feature_mask"] if len(inputs) == 1 else [f"feature_mask[{i}]"
                                                       for i in range(len(inputs))]
    ids = [_mask_ids(m, x, method, n) for m, x, n in zip(masks, inputs, names)]
    rows = max(i.shape[0] for i in ids)
    mask = torch.cat([i.expand(rows, -1) for i in ids], 1)
    # The feature count fixes shapes, so it is read from the values (under vmap over masks: the
    # ids of all of them); the element-to-feature map keeps the mask's own (maybe vmapped) form.
    present = torch.unique(concrete(mask))
    return Features(torch.searchsorted(present, mask.contiguous()), present.numel(), inputs)
