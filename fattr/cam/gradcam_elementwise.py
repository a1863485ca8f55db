"""Grad-CAM element-wise (pytorch-grad-cam's GradCAMElementWise)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch.nn.functional as F
from torch import Tensor

from fattr.cam.engine import Reshape, Upsample, cam_method
from fattr.core.model import ModelFn
from fattr.layers.taps import LayerSpec


def _gradcam_elementwise(a: Tensor, g: Tensor) -> Tensor:
    return F.relu(g * a).sum(1)


def gradcam_elementwise(f: ModelFn, layer: LayerSpec, relu: bool = True,
                        upsample: Upsample = True, *, reshape: Reshape = None,
                        output: Callable[[Any], Tensor] | None = None) -> Callable[..., Tensor]:
    """HiResCAM with the ReLU inside the channel sum: only positive evidence adds up.

        map = sum_c ReLU(G_c * A_c)

    Arguments and result as `fattr.gradcam` (the map is already non-negative, so `relu`
    changes nothing). pytorch-grad-cam's GradCAMElementWise; no paper of its own.

    >>> maps = fattr.gradcam_elementwise(f, "layer4")(params, x, target=labels)
    """
    return cam_method(f, layer, _gradcam_elementwise, relu=relu, upsample=upsample,
                      reshape=reshape, output=output, method="gradcam_elementwise",
                      doc=gradcam_elementwise.__doc__)
