"""Grad-CAM (Selvaraju et al. 2017)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from torch import Tensor

from fattr.cam.engine import Reshape, Upsample, cam_method, spatial
from fattr.core.model import ModelFn
from fattr.layers.taps import LayerSpec


def _gradcam(a: Tensor, g: Tensor) -> Tensor:
    return (g.mean(spatial(g), keepdim=True) * a).sum(1)


def gradcam(f: ModelFn, layer: LayerSpec, relu: bool = True, upsample: Upsample = True, *,
            reshape: Reshape = None, output: Callable[[Any], Tensor] | None = None,
            ) -> Callable[..., Tensor]:
    """Grad-CAM: the layer's channels weighted by their spatially averaged gradients.

        w_c = mean_ij dy_t/dA_cij,   map = ReLU(sum_c w_c A_c)

    Args (shared by every CAM):
        f: a model function from `fattr.functional` (or `per_example` of one).
        layer: the dotted name from `model.named_modules()` (e.g. "layer4"), or the submodule.
            Unknown names raise an error that suggests close ones.
        relu: keep only the positive part (default True, as the paper and pytorch-grad-cam;
            captum's LayerGradCam defaults to False).
        upsample: True (default) resizes the map to the input's spatial size, bilinear with
            align_corners=False; False keeps the layer's size; or an interpolation mode by name
            ("nearest", "bicubic", "area", "nearest-exact").
        reshape: a callable from the layer output to (B, C, h, w) maps, for transformer token
            layers: `fattr.tokens_to_grid(prefix_tokens=1)` (ViT) or
            `fattr.tokens_to_grid(layout="bhwc")` (Swin). It also applies to the gradient.
        output: picks a tensor from the model's output.

    Returns `attr(params, x, target=None) -> Tensor` of shape (B, 1, *x.shape[2:]) (or the
    layer's spatial size without upsampling). Maps are raw, NOT min-max normalized, so
    magnitudes stay comparable across images (pytorch-grad-cam rescales each map to [0, 1]).
    Differentiable in params and x, and works under `vmap` over targets.

    >>> cam = fattr.gradcam(f, "layer4")
    >>> maps = cam(params, x, target=labels)          # (B, 1, H, W)

    Selvaraju, Cogswell, Das, Vedantam, Parikh, Batra, "Grad-CAM: Visual Explanations from Deep
    Networks via Gradient-based Localization" (2017), https://arxiv.org/abs/1610.02391
    """
    return cam_method(f, layer, _gradcam, relu=relu, upsample=upsample, reshape=reshape,
                      output=output, method="gradcam", doc=gradcam.__doc__)
