"""XRAI's segmentation: Felzenszwalb's graph method at several scales (PAIR's defaults), run on
the host one image at a time (scikit-image has no batched form and the number of regions
depends on the image), and the sparse (region id, pixel id) membership list the search uses."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

import numpy as np
import torch
from torch import Tensor

from fattr.core.checks import check_count, check_input, check_non_negative, concrete
from fattr.errors import FattrError, FattrTypeError

FELZENSZWALB_SCALES = (50, 100, 150, 250, 500, 1200)


class Regions(NamedTuple):
    """Region membership of a batch: row i puts flat pixel `pixel[i]` (b * H*W + p) into region
    `region[i]` (b * count + m). Regions may overlap; a region may be empty."""

    region: Tensor
    pixel: Tensor
    count: int  # regions per example (the largest count in the batch)

    @classmethod
    def of(cls, region: Tensor, pixel: Tensor, count: int, batch: int, pixels: int) -> Regions:
        """Ids stored as int32 where they fit (the lists are the memory of the selection)."""
        small = max(batch * count, batch * pixels) < 2**31
        return cls(*(t.to(torch.int32 if small else torch.int64) for t in (region, pixel)),
                   count)


@dataclass(frozen=True)
class Felzenszwalb:
    """PAIR's multi-scale segmentation: image min-max scaled to [-1, 1], resized (bicubic,
    anti-aliased), one Felzenszwalb segmentation per scale, labels resized back (nearest), each
    region dilated by a disk of radius `dilation`."""

    scales: tuple[float, ...]
    sigma: float
    min_size: int
    resize: tuple[int, int] | None
    dilation: int
    method: str

    @classmethod
    def checked(cls, scales: Sequence[float], sigma: float, min_size: int,
                resize: int | tuple[int, int] | None, dilation: int, method: str,
                ) -> Felzenszwalb:
        if (isinstance(scales, (str, bytes)) or not isinstance(scales, Sequence) or not scales
                or not all(isinstance(s, (int, float)) and not isinstance(s, bool) and s > 0
                           for s in scales)):
            raise FattrError(f"{method}: scales must be a non-empty sequence of positive "
                             f"numbers (PAIR: {FELZENSZWALB_SCALES}), got {scales!r}.")
        check_non_negative(sigma, "sigma", method)
        check_count(min_size, "min_size", method, minimum=0)
        check_count(dilation, "dilation", method, minimum=0)
        if resize is not None:
            size = (resize, resize) if isinstance(resize, int) else resize
            if (not isinstance(size, tuple) or len(size) != 2
                    or not all(isinstance(s, int) and not isinstance(s, bool) and s > 0
                               for s in size)):
                raise FattrError(f"{method}: resize must be None (segment at the input's "
                                 "size), an int or a pair of positive ints (PAIR: 224), got "
                                 f"{resize!r}.")
            resize = size
        return cls(tuple(scales), sigma, min_size, resize, dilation, method)

    def image_regions(self, image: np.ndarray) -> list[np.ndarray]:
        """Flat pixel indices of every region of one (H, W, C) image, scale by scale."""
        sk = skimage_module(self.method)
        low, high = image.min(), image.max()
        unit = (image - low) / (high - low) if high > low else np.zeros_like(image)
        scaled = unit * 2.0 - 1.0
        if self.resize is not None:
            scaled = sk.transform.resize(scaled, self.resize, order=3, mode="constant",
                                         preserve_range=True, anti_aliasing=True)
        footprint = sk.morphology.disk(self.dilation) if self.dilation else None
        regions = []
        for scale in self.scales:
            labels = sk.segmentation.felzenszwalb(scaled, scale=scale, sigma=self.sigma,
                                                  min_size=self.min_size)
            if self.resize is not None:
                labels = sk.transform.resize(labels, image.shape[:2], order=0, mode="constant",
                                             preserve_range=True, anti_aliasing=False)
            regions.extend(_label_regions(labels.astype(np.int64), footprint))
        return regions

    def __call__(self, x: Tensor) -> Regions:
        """The regions of every image of a (B, C, H, W) batch (a host loop over images)."""
        with torch._C._DisableFuncTorch():  # a host copy of the values, also inside grad
            images = concrete(x).detach().to("cpu", torch.float64).permute(0, 2, 3, 1).numpy()
        pixels = images.shape[1] * images.shape[2]
        per_image = [self.image_regions(image) for image in images]
        count = max(len(regions) for regions in per_image)
        dtype = np.int32 if len(images) * max(count, pixels) < 2**31 else np.int64
        members = [(m + b * pixels).astype(dtype) for b, regions in enumerate(per_image)
                   for m in regions]
        ids = [b * count + m for b, regions in enumerate(per_image) for m in range(len(regions))]
        region = np.repeat(np.asarray(ids, dtype), [m.size for m in members])
        pixel = np.concatenate(members) if members else np.zeros(0, dtype)
        as_tensor = lambda a: torch.from_numpy(a).to(x.device)
        return Regions.of(as_tensor(region), as_tensor(pixel), count, len(images), pixels)


def skimage_module(method: str) -> Any:
    """scikit-image, imported on first use: it is an optional dependency."""
    try:
        import scipy.ndimage  # noqa: F401  (scikit-image depends on scipy)
        import skimage.morphology
        import skimage.segmentation
        import skimage.transform
    except ImportError as err:
        raise FattrError(f"{method}: computing the segmentation needs scikit-image, which is "
                         "not installed. Run `pip install scikit-image`, or pass your own "
                         "regions as segments= (integer label maps or boolean masks).") from err
    return skimage


def _label_regions(labels: np.ndarray, footprint: np.ndarray | None) -> list[np.ndarray]:
    """Flat pixel indices of each label of an (H, W) map, in label order, each dilated by
    `footprint` (binary dilation inside the label's bounding box grown by the radius)."""
    from scipy import ndimage

    height, width = labels.shape
    radius = 0 if footprint is None else footprint.shape[0] // 2
    low = labels.min()
    regions = []
    for label, box in enumerate(ndimage.find_objects(labels - low + 1), start=low):
        if box is None:  # a label that vanished when the map was resized back: no region
            continue
        rows, cols = box
        top, left = max(rows.start - radius, 0), max(cols.start - radius, 0)
        bottom, right = min(rows.stop + radius, height), min(cols.stop + radius, width)
        member = labels[top:bottom, left:right] == label
        if footprint is not None:
            member = ndimage.binary_dilation(member, structure=footprint)
        ys, xs = np.nonzero(member)
        regions.append((ys + top) * width + xs + left)
    return regions


def given_regions(segments: object, batch: int, size: tuple[int, int], device: torch.device,
                   ) -> Regions:
    """Regions from the caller: boolean masks (B, M, H, W), or integer label maps (B, H, W) or
    (B, S, H, W) where each label of each map is one region."""
    if not isinstance(segments, Tensor):
        raise FattrTypeError(f"xrai: segments must be a tensor, got {type(segments).__name__}.")
    pixels = size[0] * size[1]
    integer = not segments.is_floating_point() and not segments.is_complex()
    masks = segments.dtype == torch.bool
    shapes = [(batch, "M", *size)] if masks else [(batch, *size), (batch, "S", *size)]
    if (not integer or segments.ndim not in ((4,) if masks else (3, 4))
            or segments.shape[0] != batch or tuple(segments.shape[-2:]) != size):
        expected = " or ".join(str(s).replace("'", "") for s in shapes)
        raise FattrError(f"xrai: segments must be boolean masks (B, M, H, W) or integer label "
                         f"maps (B, H, W) or (B, S, H, W) for x of batch {batch} and size "
                         f"{size}: expected {expected}, got dtype {segments.dtype} and shape "
                         f"{tuple(segments.shape)}.")
    segments = segments.to(device)
    if masks:
        count = segments.shape[1]
        flat = segments.flatten().nonzero()[:, 0]  # (b * count + m) * pixels + p
        region = torch.div(flat, pixels, rounding_mode="floor")
        pixel = torch.div(region, count, rounding_mode="floor") * pixels + flat % pixels
        return Regions.of(region, pixel, count, batch, pixels)
    maps = (segments if segments.ndim == 4 else segments.unsqueeze(1)).long().flatten(2)
    if maps.numel() and int(maps.min()) < 0:
        raise FattrError(f"xrai: segment labels must be >= 0, got {int(maps.min())}.")
    labels = int(maps.max()) + 1 if maps.numel() else 1
    per_example = maps.shape[1] * labels
    offsets = torch.arange(batch * maps.shape[1], device=device).view(batch, -1, 1) * labels
    keys, ids = torch.unique(maps + offsets, return_inverse=True)  # sorted: (b, s, label)
    example = torch.div(keys, per_example, rounding_mode="floor")
    first = torch.searchsorted(keys, torch.arange(batch, device=device) * per_example)
    count = int(torch.bincount(example, minlength=batch).max()) if keys.numel() else 0
    region = example * count + torch.arange(keys.numel(), device=device) - first[example]
    pixel = torch.arange(batch, device=device).view(batch, 1, 1) * pixels + \
        torch.arange(pixels, device=device)
    return Regions.of(region[ids].flatten(), pixel.expand_as(maps).flatten(), count, batch,
                      pixels)


def xrai_segments(x: Tensor, *, scales: Sequence[float] = FELZENSZWALB_SCALES,
                  sigma: float = 0.8, min_size: int = 150,
                  resize: int | tuple[int, int] | None = 224, dilation: int = 5) -> Tensor:
    """XRAI's default regions of a batch of images, as boolean masks (B, M, H, W).

    The segmentation `fattr.xrai` computes when no `segments=` are given (arguments as there),
    padded with empty masks to the largest region count in the batch. Compute it once and pass
    it as `segments=` to reuse it (with other methods, targets or settings), or edit it. Runs
    on the host, one image at a time; needs scikit-image.

    >>> masks = fattr.xrai_segments(x)            # (B, M, H, W) bool
    >>> scores = fattr.xrai(ig)(params, x, labels, segments=masks)
    """
    check_input(x, "xrai_segments", gradient=False)
    if x.ndim != 4:
        raise FattrError(f"xrai_segments: x must be a batch of images (B, C, H, W), got shape "
                         f"{tuple(x.shape)}.")
    segmenter = Felzenszwalb.checked(scales, sigma, min_size, resize, dilation, "xrai_segments")
    batch, _, height, width = x.shape
    masks = torch.zeros(batch, 0, height * width, dtype=torch.bool, device=x.device)
    if batch:
        regions = segmenter(x)
        masks = masks.new_zeros(batch * regions.count, height * width)
        masks[regions.region, regions.pixel % (height * width)] = True
    return masks.view(batch, -1, height, width)
