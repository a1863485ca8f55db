"""CAMERAS (Jalwana et al. 2021): multi-scale accumulated activations and gradients."""

from __future__ import annotations

import numbers
from collections.abc import Callable, Sequence
from typing import Any

import torch.nn.functional as F
from torch import Tensor

from fattr.cam.engine import LayerCam, Reshape, resize
from fattr.core.call import Call
from fattr.core.model import ModelFn, Params
from fattr.errors import FattrError
from fattr.layers.taps import LayerSpec

# The reference resolutions 224, 324, ..., 924 for a 224-pixel input, as factors.
REFERENCE_SCALES = tuple(r / 224 for r in range(224, 1000, 100))
_SMOOTH = {1: "linear", 2: "bicubic", 3: "trilinear"}


def rescale(x: Tensor, factor: float) -> Tensor:
    """x resized by `factor` on its spatial axes (bicubic for images, align_corners=False)."""
    if factor == 1:
        return x
    size = tuple(max(1, round(factor * s)) for s in x.shape[2:])
    return F.interpolate(x, size=size, mode=_SMOOTH[x.ndim - 2], align_corners=False)


def cameras(f: ModelFn, layer: LayerSpec, scales: Sequence[float] = REFERENCE_SCALES,
            relu: bool = True, *, reshape: Reshape = None,
            output: Callable[[Any], Tensor] | None = None) -> Callable[..., Tensor]:
    """CAMERAS: activations and gradients of several input resolutions, upsampled and averaged.

        x_s = x resized by factor s (bicubic);  A_s, G_s at the layer for input x_s
        Abar = mean_s up(A_s),  Gbar = mean_s up(G_s)   (bilinear to the input size)
        map = ReLU(sum_c Abar_c * Gbar_c)

    Args:
        f, layer, relu, reshape, output: as `fattr.gradcam` (the map is always at input size).
        scales: resize factors of the input (default: the reference's 224, 324, ..., 924
            pixels for a 224-pixel input, i.e. 1.0 to 4.125; a factor 1 uses x itself).

    Differences from the reference: it explains the softmax probability of its class (pass
    `target=lambda out: out.softmax(-1)[:, c]` for that) and drops scales whose top class
    differs from the first scale's; fattr explains the given target at every scale, so the map
    is a fixed, differentiable function of the input.

    Returns `attr(params, x, target=None) -> Tensor` of shape (B, 1, *x.shape[2:]).

    >>> maps = fattr.cameras(f, "layer4", scales=(1.0, 1.5, 2.0))(params, x, target=labels)

    Jalwana, Akhtar, Bennamoun, Mian, "CAMERAS: Enhanced Resolution And Sanity preserving
    Class Activation Mapping for image saliency" (2021), https://arxiv.org/abs/2106.10649
    """
    scales = tuple(scales) if isinstance(scales, Sequence) else scales
    if not isinstance(scales, tuple) or not scales or not all(
            isinstance(s, numbers.Real) and not isinstance(s, bool) and s > 0 for s in scales):
        raise FattrError(f"cameras: scales must be a non-empty sequence of positive resize "
                         f"factors such as (1.0, 1.5, 2.0), got {scales!r}.")
    cam = LayerCam(f, layer, relu, True, reshape, output, "cameras")

    def compute(params: Params, call: Call) -> Tensor:
        x = call.x
        if x.ndim - 2 not in _SMOOTH:
            raise FattrError(f"cameras: inputs need 1 to 3 spatial axes after (B, C), got x of "
                             f"shape {tuple(x.shape)}.")
        size = x.shape[2:]
        total_a = total_g = None
        for factor in scales:
            a, g = cam.maps(params, call, (rescale(x, factor),))
            a, g = resize(a, size, "bilinear", "cameras"), resize(g, size, "bilinear", "cameras")
            total_a = a if total_a is None else total_a + a
            total_g = g if total_g is None else total_g + g
        n = len(scales)
        return cam.finish(((total_a / n) * (total_g / n)).sum(1), call)

    return cam.attribution(compute, cameras.__doc__, gradient=True)
