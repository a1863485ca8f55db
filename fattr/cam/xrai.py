"""XRAI: attributions summed up into regions of a multi-scale segmentation (Kapishnikov 2019).

Three parts. The segmentation (Felzenszwalb's graph method at several scales, PAIR's defaults)
runs on the host, one image at a time: scikit-image has no batched form and the number of
regions depends on the image, so this part cannot be vectorized. The greedy selection runs on
the attribution's device for the whole batch at once, on a sparse membership list (region id,
pixel id): every step takes one region per example, and each region's uncovered size and value
sum are updated only where pixels were newly covered. It is a choice, so it is not
differentiable; the scores are: each pixel gets the mean attribution of the pixels covered in
the same step, one differentiable `index_add`."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

import numpy as np
import torch
import torch._C._functorch as _functorch
from torch import Tensor

from fattr.core.checks import check_count, check_input, check_non_negative, concrete
from fattr.core.model import Params
from fattr.core.targets import TargetSpec
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
        sk = _skimage(self.method)
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


def _skimage(method: str) -> Any:
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


def _given_regions(segments: object, batch: int, size: tuple[int, int], device: torch.device,
                   ) -> Regions:
    """Regions from the caller: boolean masks (B, M, H, W), or integer label maps (B, H, W) or
    (B, S, H, W) where each label of each map is one region."""
    if not isinstance(segments, Tensor):
        raise FattrError(f"xrai: segments must be a tensor, got {type(segments).__name__}.")
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


def _vmapped(t: Tensor) -> bool:
    """Whether `t` is batched by a torch.func.vmap at any level."""
    while True:
        if _functorch.is_batchedtensor(t):
            return True
        if not (_functorch.is_gradtrackingtensor(t) or _functorch.is_functionaltensor(t)):
            return False
        t = _functorch.get_unwrapped(t)


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


def xrai(attr_fn: Callable[..., Tensor], *, baselines: str | None = None, min_pixels: int = 50,
         area_threshold: float = 1.0, scales: Sequence[float] = FELZENSZWALB_SCALES,
         sigma: float = 0.8, min_size: int = 150, resize: int | tuple[int, int] | None = 224,
         dilation: int = 5) -> Callable[..., Tensor]:
    """XRAI: any pixel attribution turned into scores of image regions, most salient first.

        a_p = max_c A(x)_{c,p}                      (A = attr_fn; PAIR aggregates channels by max)
        S = {}; repeat:  drop regions R with |R \\ S| < min_pixels
                         R* = argmax_R mean_{p in R \\ S} a_p
                         score(p) = that mean for p in R* \\ S;   S = S u R*
        until no region is left or |S| / (H W) > area_threshold;
        pixels never covered score mean_{p not in S} a_p.

    Regions overlap (several scales, dilated), so a region's score is the density of what it
    ADDS to the regions chosen before it; ranking pixels by score ranks the regions.

    Args:
        attr_fn: any attribution function `attr_fn(params, x, target, **per_call)` whose result
            is (B, C, H, W) or (B, H, W) at x's size, e.g. `fattr.integrated_gradients(f)`.
        baselines: None (default): call `attr_fn` once, as given (per-call arguments such as
            `baseline=` pass through). "min_max": PAIR's default, the mean of two calls with
            `baseline=` each example's minimum and maximum value ("black" and "white");
            `attr_fn` must take `baseline=`. PAIR's default `attr_fn` is IG with 100 steps on
            linspace(0, 1, 100) and a plain mean, which no fattr rule reproduces exactly:
            `fattr.integrated_gradients(f, steps=100)` is the closest (and more accurate).
        min_pixels: a region that adds fewer new pixels is dropped (PAIR's `min_pixel_diff`,
            50).
        area_threshold: stop once this fraction of the image is covered (PAIR, 1.0: all).
        scales, sigma, min_size: Felzenszwalb's parameters, one segmentation per scale (PAIR:
            scales (50, 100, 150, 250, 500, 1200), sigma 0.8, min_size 150).
        resize: the size the image is resized to for segmenting (PAIR: 224; None keeps x's
            size); labels are resized back to x's size.
        dilation: every region is dilated by a disk of this radius (PAIR: 5; 0 for none).

    Returns `attr(params, x, target=None, *, segments=None, **per_call) -> Tensor` of shape
    (B, 1, H, W) (like the CAMs; (1, H, W) for a per-example `attr_fn`), in the attribution's
    dtype. `segments`: None computes the regions (needs scikit-image; see
    `fattr.xrai_segments`), else boolean masks (B, M, H, W) (may overlap) or integer label maps
    (B, H, W) or (B, S, H, W) (each label of each map one region), used as given, without
    dilation, as PAIR's `segments=`. The segmentation runs on the host one image at a time;
    the region selection runs on x's device for the whole batch at once. The scores are
    differentiable in the attribution (the choice of regions is piecewise constant).
    `vmap` over targets works (`segments` then stay unbatched); `vmap` over examples does not
    (regions differ in number from image to image): call xrai on the batch instead.

    >>> attr = fattr.xrai(fattr.integrated_gradients(f, steps=100), baselines="min_max")
    >>> scores = attr(params, x, target=labels)          # (B, 1, H, W)
    >>> top = scores >= scores.flatten(1).quantile(0.9, 1)[:, None, None, None]   # top 10 %

    Kapishnikov, Bolukbasi, Viegas, Terry, "XRAI: Better Attributions Through Regions" (2019),
    https://arxiv.org/abs/1906.02825.

    Differences from PAIR's `saliency.core.XRAI` (whose "full" algorithm this is, equal to it
    on the same attribution and segments): PAIR takes one (H, W, C) image and returns (H, W);
    PAIR always runs its own IG unless given `base_attribution`, fattr wraps any `attr_fn` and
    adds the black and white baselines only with `baselines="min_max"`; PAIR's approximate
    "fast" algorithm is not offered; a constant image (PAIR divides by zero when rescaling it)
    is segmented as all -1.
    """
    if not callable(attr_fn):
        raise FattrTypeError(f"xrai: attr_fn must be an attribution function such as "
                             f"fattr.integrated_gradients(f), got {type(attr_fn).__name__}.")
    if baselines not in (None, "min_max"):
        raise FattrError(f"xrai: baselines must be None (call attr_fn as given) or 'min_max' "
                         f"(PAIR's black and white baselines), got {baselines!r}.")
    if baselines and "baseline" not in getattr(attr_fn, "batched_kwargs", ("baseline",)):
        raise FattrError(f"xrai: baselines='min_max' passes baseline= to attr_fn, but "
                         f"{getattr(attr_fn, '__name__', attr_fn)!r} takes no baseline. Use a "
                         "path method such as fattr.integrated_gradients(f), or baselines=None.")
    check_count(min_pixels, "min_pixels", "xrai")
    if (isinstance(area_threshold, bool) or not isinstance(area_threshold, (int, float))
            or not 0 <= area_threshold <= 1):
        raise FattrError(f"xrai: area_threshold must be a fraction of the image in [0, 1], got "
                         f"{area_threshold!r}.")
    segmenter = Felzenszwalb.checked(scales, sigma, min_size, resize, dilation, "xrai")
    per_example = bool(getattr(attr_fn, "per_example", False))

    def base(params: Params, x: Tensor, target: TargetSpec, per_call: dict[str, Any]) -> Tensor:
        if baselines is None:
            return attr_fn(params, x, target, **per_call)
        if "baseline" in per_call:
            raise FattrError("xrai: baselines='min_max' sets baseline= itself; pass either "
                             "baselines='min_max' or a per-call baseline=, not both.")
        axes = tuple(range(x.ndim)) if per_example else tuple(range(1, x.ndim))
        black = attr_fn(params, x, target, baseline=x.amin(axes, keepdim=True), **per_call)
        white = attr_fn(params, x, target, baseline=x.amax(axes, keepdim=True), **per_call)
        return (black + white) / 2

    def attribute(params: Params, x: Tensor, target: TargetSpec = None, *,
                  segments: Tensor | None = None, **per_call: Any) -> Tensor:
        check_input(x, "xrai")
        if x.ndim != (3 if per_example else 4):
            shape = "(C, H, W) (attr_fn is per-example)" if per_example else "(B, C, H, W)"
            raise FattrError(f"xrai: x must be images of shape {shape}, got {tuple(x.shape)}.")
        if _vmapped(x) or (isinstance(segments, Tensor) and _vmapped(segments)):
            raise FattrError("xrai: cannot run inside torch.func.vmap over examples: its regions "
                             "differ in number and shape from image to image. Call xrai on the "
                             "whole batch (built from the batched model): it is vectorized "
                             "across examples already. vmap over targets works.")
        images = x.unsqueeze(0) if per_example else x
        batch, _, height, width = images.shape
        if batch == 0:
            return images.new_zeros(0, 1, height, width)
        if segments is None:
            _skimage(segmenter.method)
            regions = None
        else:
            given = segments.unsqueeze(0) if per_example and isinstance(segments, Tensor) \
                else segments
            regions = _given_regions(given, batch, (height, width), x.device)
        a = base(params, x, target, per_call)
        a = a.unsqueeze(0) if per_example else a
        if a.ndim not in (3, 4) or a.shape[0] != batch or tuple(a.shape[-2:]) != (height, width):
            raise FattrError(f"xrai: attr_fn must return a map per pixel, (B, C, H, W) or "
                             f"(B, H, W) with B, H, W = {batch}, {height}, {width} as x; got "
                             f"{tuple(a.shape)}. Upsample layer-size maps to the input first.")
        values = (a.amax(1) if a.ndim == 4 else a).flatten(1)
        if regions is None:
            regions = segmenter(images)
        steps = selection_steps(values, regions, min_pixels, area_threshold)
        result = region_means(values, steps).view(batch, 1, height, width)
        return result.squeeze(0) if per_example else result

    attribute.__name__ = attribute.__qualname__ = "xrai"
    attribute.__doc__ = xrai.__doc__
    attribute.per_example = per_example  # type: ignore[attr-defined]
    attribute.batched_kwargs = ()  # type: ignore[attr-defined]
    return attribute
