"""XGrad-CAM (Fu et al. 2020)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from torch import Tensor

from fattr.cam.engine import Reshape, Upsample, cam_method, spatial
from fattr.core.model import ModelFn
from fattr.layers.taps import LayerSpec


def _xgradcam(a: Tensor, g: Tensor) -> Tensor:
    axes = spatial(g)
    weights = (g * a).sum(axes, keepdim=True) / (a.sum(axes, keepdim=True) + 1e-7)
    return (weights * a).sum(1)


def xgradcam(f: ModelFn, layer: LayerSpec, relu: bool = True, upsample: Upsample = True, *,
             reshape: Reshape = None, output: Callable[[Any], Tensor] | None = None,
             ) -> Callable[..., Tensor]:
    """XGrad-CAM: channel weights are activation-weighted averages of the gradient.

        w_c = sum_ij (G_cij A_cij) / (sum_ij A_cij + 1e-7),   map = ReLU(sum_c w_c A_c)

    Arguments and result as `fattr.gradcam`.

    >>> maps = fattr.xgradcam(f, "layer4")(params, x, target=labels)

    Fu, Hu, Dong, Guo, Gao, Li, "Axiom-based Grad-CAM: Towards Accurate Visualization and
    Explanation of CNNs" (2020), https://arxiv.org/abs/2008.02312
    """
    return cam_method(f, layer, _xgradcam, relu=relu, upsample=upsample, reshape=reshape,
                      output=output, method="xgradcam", doc=xgradcam.__doc__)
