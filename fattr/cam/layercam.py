"""LayerCAM (Jiang et al. 2021)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch.nn.functional as F
from torch import Tensor

from fattr.cam.engine import Reshape, Upsample, cam_method
from fattr.core.model import ModelFn
from fattr.layers.taps import LayerSpec


def _layercam(a: Tensor, g: Tensor) -> Tensor:
    return (F.relu(g) * a).sum(1)


def layercam(f: ModelFn, layer: LayerSpec, relu: bool = True, upsample: Upsample = True, *,
             reshape: Reshape = None, output: Callable[[Any], Tensor] | None = None,
             ) -> Callable[..., Tensor]:
    """LayerCAM: activations weighted by the positive part of their own gradient.

        map = ReLU(sum_c ReLU(G_c) * A_c)

    Works on shallow layers too, where Grad-CAM's spatial average blurs. Arguments and result
    as `fattr.gradcam`.

    >>> maps = fattr.layercam(f, "layer2")(params, x, target=labels)

    Jiang, Zhang, Hou, Cheng, Wei, "LayerCAM: Exploring Hierarchical Class Activation Maps for
    Localization" (2021), https://doi.org/10.1109/TIP.2021.3089943
    """
    return cam_method(f, layer, _layercam, relu=relu, upsample=upsample, reshape=reshape,
                      output=output, method="layercam", doc=layercam.__doc__)
