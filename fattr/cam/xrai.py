"""XRAI: attributions summed up into regions of a multi-scale segmentation (Kapishnikov 2019).

The method in three steps, each in its own file: segment each image (`xrai_segments.py`, on
the host), take the attribution, search the regions greedily for the whole batch at once
(`xrai_search.py`, on the attribution's device), and score every pixel with the mean
attribution of its step's region."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from torch import Tensor

from fattr.cam.xrai_search import region_means, selection_steps, vmapped
from fattr.cam.xrai_segments import (
    FELZENSZWALB_SCALES,
    Felzenszwalb,
    given_regions,
    skimage_module,
)
from fattr.core.call import AttributionFn, Contract, contract
from fattr.core.checks import check_count, check_input
from fattr.core.model import Params
from fattr.core.targets import TargetSpec
from fattr.errors import FattrError, FattrTypeError


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
    takes = contract(attr_fn).keywords
    if baselines and takes is not None and "baseline" not in takes:
        raise FattrError(f"xrai: baselines='min_max' passes baseline= to attr_fn, but "
                         f"{getattr(attr_fn, '__name__', attr_fn)!r} takes no baseline. Use a "
                         "path method such as fattr.integrated_gradients(f), or baselines=None.")
    check_count(min_pixels, "min_pixels", "xrai")
    if (isinstance(area_threshold, bool) or not isinstance(area_threshold, (int, float))
            or not 0 <= area_threshold <= 1):
        raise FattrError(f"xrai: area_threshold must be a fraction of the image in [0, 1], got "
                         f"{area_threshold!r}.")
    segmenter = Felzenszwalb.checked(scales, sigma, min_size, resize, dilation, "xrai")
    per_example = contract(attr_fn).per_example

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
        if vmapped(x) or (isinstance(segments, Tensor) and vmapped(segments)):
            raise FattrError("xrai: cannot run inside torch.func.vmap over examples: its regions "
                             "differ in number and shape from image to image. Call xrai on the "
                             "whole batch (built from the batched model): it is vectorized "
                             "across examples already. vmap over targets works.")
        images = x.unsqueeze(0) if per_example else x
        batch, _, height, width = images.shape
        if batch == 0:
            return images.new_zeros(0, 1, height, width)
        if segments is None:
            skimage_module(segmenter.method)
            regions = None
        else:
            given = segments.unsqueeze(0) if per_example and isinstance(segments, Tensor) \
                else segments
            regions = given_regions(given, batch, (height, width), x.device)
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

    inner = contract(attr_fn).keywords
    keywords = None if inner is None else (*inner, "segments")
    return AttributionFn(attribute, "xrai", Contract(per_example, (), keywords), xrai.__doc__,
                         compilable=False)  # the segmentation runs on the host
