"""Grad-CAM++ (Chattopadhay et al. 2018)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from fattr.cam.engine import Reshape, Upsample, cam_method, spatial
from fattr.core.model import ModelFn
from fattr.layers.taps import LayerSpec


def _gradcam_plus_plus(a: Tensor, g: Tensor) -> Tensor:
    axes = spatial(g)
    g2 = g.square()
    alpha = g2 / (2 * g2 + a.sum(axes, keepdim=True) * g2 * g + 1e-6)
    alpha = torch.where(g != 0, alpha, torch.zeros_like(alpha))
    weights = (F.relu(g) * alpha).sum(axes, keepdim=True)
    return (weights * a).sum(1)


def gradcam_plus_plus(f: ModelFn, layer: LayerSpec, relu: bool = True,
                      upsample: Upsample = True, *, reshape: Reshape = None,
                      output: Callable[[Any], Tensor] | None = None) -> Callable[..., Tensor]:
    """Grad-CAM++: channel weights from positive gradients with per-position coefficients.

        alpha_cij = G_cij^2 / (2 G_cij^2 + sum_kl A_ckl * G_cij^3 + 1e-6)   (0 where G = 0)
        w_c = sum_ij alpha_cij ReLU(G_cij),   map = ReLU(sum_c w_c A_c)

    This is the paper's Eq. 19 with higher derivatives of an exponential output written in
    first-gradient powers, as pytorch-grad-cam computes it. Arguments and result as
    `fattr.gradcam`.

    >>> maps = fattr.gradcam_plus_plus(f, "layer4")(params, x, target=labels)

    Chattopadhay, Sarkar, Howlader, Balasubramanian, "Grad-CAM++: Improved Visual Explanations
    for Deep Convolutional Networks" (2018), https://arxiv.org/abs/1710.11063
    """
    return cam_method(f, layer, _gradcam_plus_plus, relu=relu, upsample=upsample,
                      reshape=reshape, output=output, method="gradcam_plus_plus",
                      doc=gradcam_plus_plus.__doc__)
