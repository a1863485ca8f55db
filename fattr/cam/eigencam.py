"""EigenCAM (Muhammad and Yeasin 2020)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor

from fattr.cam.engine import Reshape, Upsample, cam_method
from fattr.core.model import ModelFn
from fattr.layers.taps import LayerSpec


def first_component(maps: Tensor) -> Tensor:
    """Projection of each position on the first principal axis of the channels.

    maps (B, C, *s) -> (B, *s): X = maps as (positions x channels), centred over positions;
    v = first right singular vector of X, oriented so that sum_c v_c >= 0; map = X v.
    """
    rows = maps.flatten(2).transpose(1, 2)                       # (B, positions, C)
    centred = rows - rows.mean(1, keepdim=True)
    _, _, vh = torch.linalg.svd(centred, full_matrices=False)
    axis = vh[:, 0, :]                                           # (B, C)
    sign = torch.where(axis.sum(-1, keepdim=True) < 0, -1.0, 1.0).to(axis.dtype)
    projection = (centred @ (axis * sign).unsqueeze(-1)).squeeze(-1)
    return projection.reshape(maps.shape[0], *maps.shape[2:])


def _eigencam(a: Tensor, _: None) -> Tensor:
    return first_component(a)


def eigencam(f: ModelFn, layer: LayerSpec, relu: bool = True, upsample: Upsample = True, *,
             reshape: Reshape = None, output: Callable[[Any], Tensor] | None = None,
             ) -> Callable[..., Tensor]:
    """EigenCAM: the layer's activations projected on their first principal component.

        X = A as (positions x channels) minus its mean over positions
        v = first right singular vector of X,   map = ReLU(X v)

    Class-agnostic: it needs no gradient and ignores `target`. The sign of a singular vector is
    arbitrary; fattr orients v so that its channel loadings sum to a non-negative number, so
    positions with more activation across channels score higher. (pytorch-grad-cam keeps
    whatever sign numpy's SVD returns, so its map can come out inverted.) Arguments and result
    as `fattr.gradcam`.

    >>> maps = fattr.eigencam(f, "layer4")(params, x)

    Muhammad, Yeasin, "Eigen-CAM: Class Activation Map using Principal Components" (2020),
    https://arxiv.org/abs/2008.00299
    """
    return cam_method(f, layer, _eigencam, relu=relu, upsample=upsample, reshape=reshape,
                      output=output, method="eigencam", doc=eigencam.__doc__,
                      uses_gradient=False)
