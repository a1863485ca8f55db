"""XRAI's greedy region search, for the whole batch at once on the attribution's device: every
step takes one region per example from a sparse membership list (region id, pixel id), and each
region's uncovered size and value sum are updated only where pixels were newly covered. The
choice is not differentiable (a custom Function with a vmap rule); the scores are: each pixel
gets the mean attribution of the pixels covered in the same step, one differentiable
`index_add`."""

from __future__ import annotations

from typing import Any, NamedTuple

import torch
import torch._C._functorch as _functorch
from torch import Tensor

from fattr.cam.xrai_segments import Regions
from fattr.errors import FattrError


class _Rows(NamedTuple):
    """Membership rows grouped by a key (CSR): the rows of key k are
    `order[start[k] : start[k] + length[k]]` (no `order`: the rows are already grouped)."""

    order: Tensor | None
    start: Tensor
    length: Tensor

    @classmethod
    def of(cls, keys: Tensor, size: int) -> _Rows:
        length = torch.bincount(keys, minlength=size)
        grouped = bool((keys[1:] >= keys[:-1]).all())  # masks and computed segments are
        order = None if grouped else torch.argsort(keys, stable=True)
        return cls(order, torch.cumsum(length, 0) - length, length)

    def __call__(self, keys: Tensor) -> Tensor:
        """The rows of every key in `keys`, concatenated."""
        length = self.length[keys]
        total = int(length.sum())
        first = torch.repeat_interleave(self.start[keys] - (torch.cumsum(length, 0) - length),
                                        length, output_size=total)
        rows = first + torch.arange(total, device=keys.device)
        return rows if self.order is None else self.order[rows]


def selection_steps(values: Tensor, regions: Regions, min_pixels: int = 50,
                    area_threshold: float = 1.0) -> Tensor:
    """The step (B, P) at which XRAI's greedy selection covers each pixel; -1 for never.

    Each step drops the regions that add fewer than `min_pixels` uncovered pixels and takes
    the region whose uncovered part has the highest mean value (the first on ties); an example
    stops when no region is left or the covered fraction exceeds `area_threshold`. All
    examples advance together. Each region's uncovered pixel count and value sum are kept up to
    date incrementally (float64), so the whole selection reads every membership row a constant
    number of times, plus an argmax over the regions per step. Not differentiable (a choice);
    works under vmap (the mapped axis is folded into the batch).
    """
    return _Selection.apply(values, regions.region, regions.pixel, regions.count, min_pixels,
                            area_threshold)


class _Selection(torch.autograd.Function):
    """`selection_steps` as a Function, for its vmap rule: data-dependent shapes cannot be
    batched op by op, but the mapped axis can join the examples axis."""

    @staticmethod
    def forward(values: Tensor, region: Tensor, pixel: Tensor, count: int, min_pixels: int,
                area_threshold: float) -> Tensor:
        batch, pixels = values.shape
        at = values.detach().to(torch.float64).flatten()[pixel]
        size = torch.bincount(region, minlength=batch * count)
        mass = torch.zeros(batch * count, dtype=torch.float64, device=values.device)
        mass.index_add_(0, region, at)
        by_region, by_pixel = _Rows.of(region, batch * count), _Rows.of(pixel, batch * pixels)
        steps = torch.full((batch * pixels,), -1, dtype=torch.long, device=values.device)
        covered = torch.zeros(batch, dtype=torch.long, device=values.device)
        remaining = torch.ones(batch * count, dtype=torch.bool, device=values.device)
        active = torch.ones(batch, dtype=torch.bool, device=values.device)
        first = torch.arange(batch, device=values.device) * count
        for step in range(count):  # each step removes one region from every active example
            remaining &= size >= min_pixels
            active &= remaining.view(batch, count).any(1)
            if not bool(active.any()):
                break
            gain = torch.where(remaining, mass / size.clamp(min=1), -torch.inf)
            chosen = (gain.view(batch, count).argmax(1) + first)[active]
            new = pixel[by_region(chosen)]
            new = new[steps[new] < 0]
            steps[new] = step
            touched = by_pixel(new)  # every region holding a newly covered pixel loses it
            size.index_add_(0, region[touched], torch.full_like(touched, -1))
            mass.index_add_(0, region[touched], -at[touched])
            remaining[chosen] = False
            covered.index_add_(0, torch.div(new, pixels, rounding_mode="floor"),
                               torch.ones_like(new, dtype=torch.long))
            active &= covered <= area_threshold * pixels
        return steps.view(batch, pixels)

    @staticmethod
    def setup_context(ctx: Any, inputs: tuple, output: Tensor) -> None:
        ctx.mark_non_differentiable(output)

    @staticmethod
    def vmap(info: Any, in_dims: tuple, values: Tensor, region: Tensor, pixel: Tensor,
             count: int, min_pixels: int, area_threshold: float) -> tuple[Tensor, int]:
        if in_dims[1] is not None or in_dims[2] is not None:
            raise FattrError("xrai: the regions cannot be batched by vmap; pass one set of "
                             "segments for the whole batch.")
        values = values.movedim(in_dims[0], 0)
        mapped, batch, pixels = values.shape
        shift = torch.arange(mapped, device=values.device)[:, None]
        steps = _Selection.apply(values.reshape(mapped * batch, pixels),
                                 (region + shift * (batch * count)).flatten(),
                                 (pixel + shift * (batch * pixels)).flatten(), count,
                                 min_pixels, area_threshold)
        return steps.view(mapped, batch, pixels), 0


def region_means(values: Tensor, steps: Tensor) -> Tensor:
    """Every pixel scored with the mean value of the pixels covered in the same step (the
    pixels never covered form one more group). Differentiable in `values` (B, P)."""
    batch, pixels = values.shape
    groups = pixels + 1  # at most one group per pixel, plus the uncovered rest
    group = (torch.where(steps < 0, pixels, steps)
             + torch.arange(batch, device=values.device)[:, None] * groups).flatten()
    flat = values.flatten()
    sums = flat.new_zeros(batch * groups).index_add(0, group, flat)
    sizes = flat.new_zeros(batch * groups).index_add(0, group, torch.ones_like(flat))
    return (sums / sizes.clamp(min=1))[group].view(batch, pixels)


def vmapped(t: Tensor) -> bool:
    """Whether `t` is batched by a torch.func.vmap at any level."""
    while True:
        if _functorch.is_batchedtensor(t):
            return True
        if not (_functorch.is_gradtrackingtensor(t) or _functorch.is_functionaltensor(t)):
            return False
        t = _functorch.get_unwrapped(t)
