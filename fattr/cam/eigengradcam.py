"""EigenGradCAM: EigenCAM on gradient times activation (pytorch-grad-cam)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from torch import Tensor

from fattr.cam.eigencam import first_component
from fattr.cam.engine import Reshape, Upsample, cam_method
from fattr.core.model import ModelFn
from fattr.layers.taps import LayerSpec


def _eigengradcam(a: Tensor, g: Tensor) -> Tensor:
    return first_component(g * a)


def eigengradcam(f: ModelFn, layer: LayerSpec, relu: bool = True, upsample: Upsample = True, *,
                 reshape: Reshape = None, output: Callable[[Any], Tensor] | None = None,
                 ) -> Callable[..., Tensor]:
    """EigenGradCAM: the first principal component of G * A (class-discriminative EigenCAM).

        X = (G * A) as (positions x channels), centred;  map = ReLU(X v), v its first axis

    Sign convention as `fattr.eigencam`; arguments and result as `fattr.gradcam`.

    >>> maps = fattr.eigengradcam(f, "layer4")(params, x, target=labels)

    After Muhammad, Yeasin, "Eigen-CAM" (2020), https://arxiv.org/abs/2008.00299, as in
    pytorch-grad-cam.
    """
    return cam_method(f, layer, _eigengradcam, relu=relu, upsample=upsample, reshape=reshape,
                      output=output, method="eigengradcam", doc=eigengradcam.__doc__)
