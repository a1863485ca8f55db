"""HiResCAM (Draelos and Carin 2020)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from torch import Tensor

from fattr.cam.engine import Reshape, Upsample, cam_method
from fattr.core.model import ModelFn
from fattr.layers.taps import LayerSpec


def _hirescam(a: Tensor, g: Tensor) -> Tensor:
    return (g * a).sum(1)


def hirescam(f: ModelFn, layer: LayerSpec, relu: bool = True, upsample: Upsample = True, *,
             reshape: Reshape = None, output: Callable[[Any], Tensor] | None = None,
             ) -> Callable[..., Tensor]:
    """HiResCAM: the elementwise product of gradient and activation, summed over channels.

        map = ReLU(sum_c G_c * A_c)

    Unlike Grad-CAM it does not average the gradient over space, so the map shows where the
    model looked (for a linear head on a global average pool the two coincide). Arguments and
    result as `fattr.gradcam`.

    >>> maps = fattr.hirescam(f, "layer4")(params, x, target=labels)

    Draelos, Carin, "Use HiResCAM instead of Grad-CAM for faithful explanations of
    convolutional neural networks" (2020), https://arxiv.org/abs/2011.08891
    """
    return cam_method(f, layer, _hirescam, relu=relu, upsample=upsample, reshape=reshape,
                      output=output, method="hirescam", doc=hirescam.__doc__)
