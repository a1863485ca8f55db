"""Score-CAM (Wang et al. 2020), batched across images and channels."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor

from fattr.cam.engine import LayerCam, Reshape, Upsample, minmax, resize, spatial
from fattr.core.call import Call
from fattr.core.chunking import check_batch_size, chunked, default_batch_size
from fattr.core.inputs import rows_of
from fattr.core.model import ModelFn, Params
from fattr.errors import FattrError
from fattr.layers.taps import LayerSpec


def channel_rows(maps: Tensor) -> tuple[Tensor, Tensor]:
    """(example, channel) index of every (image, channel) pair of (B, C, ...) maps, image-major."""
    batch, channels = maps.shape[:2]
    example = torch.arange(batch, device=maps.device).repeat_interleave(channels)
    return example, torch.arange(channels, device=maps.device).repeat(batch)


def weighted_channels(weights: Tensor, maps: Tensor) -> Tensor:
    """sum_c w_c A_c for weights (B, C) and maps (B, C, *s) -> (B, *s)."""
    return (weights.reshape(*weights.shape, *([1] * (maps.ndim - 2))) * maps).sum(1)


def scorecam(f: ModelFn, layer: LayerSpec, relu: bool = True, upsample: Upsample = True,
             batch_size: int | None = None, *, align_corners: bool = False,
             reshape: Reshape = None, output: Callable[[Any], Tensor] | None = None,
             ) -> Callable[..., Tensor]:
    """Score-CAM: each channel, used as a soft mask on the input, is weighted by the score it
    keeps.

        M_c = minmax(up(A_c)) in [0, 1]   (bilinear to the input size, per image and channel)
        s_c = y_t(x * M_c),   w = softmax_c(s),   map = ReLU(sum_c w_c A_c)

    Gradient-free. All B * C masked inputs go through the model in chunks of `batch_size`
    mixed across images and channels (pytorch-grad-cam loops over images in Python). The min-max
    uses eps 1e-8 as pytorch-grad-cam.

    Args: as `fattr.gradcam`, plus
        batch_size: the most masked inputs per forward call; None (default) picks a chunk
            from the input size (about 2**19 input elements per call on the CPU, 2**24 on a
            GPU; `fattr.core.chunking.default_batch_size`; pytorch-grad-cam sends 16). The
            result does not depend on it.
        align_corners: of the bilinear mask upsampling. False (default) as the authors' code;
            pytorch-grad-cam's UpsamplingBilinear2d uses True. On coarse grids (a ViT's 4x4
            tokens) the two give visibly different masks, and where the channel scores are
            close, different maps: pass True to reproduce pytorch-grad-cam.

    Returns (B, 1, H, W) maps, differentiable in params and x.

    >>> maps = fattr.scorecam(f, "layer4", batch_size=128)(params, x, target=labels)

    Wang, Wang, Du, Yang, Zhang, Ding, Mardziel, Hu, "Score-CAM: Score-Weighted Visual
    Explanations for Convolutional Neural Networks" (2020), https://arxiv.org/abs/1910.01279
    """
    check_batch_size(batch_size, "scorecam")
    if not isinstance(align_corners, bool):
        raise FattrError(f"scorecam: align_corners must be True or False, got {align_corners!r}.")
    cam = LayerCam(f, layer, relu, upsample, reshape, output, "scorecam")

    def compute(params: Params, call: Call) -> Tensor:
        x, *others = call.inputs  # the masks apply to the first input
        a = cam.activations(params, call)
        example, channel = channel_rows(a)

        def chunk(ex: Tensor, ch: Tensor) -> Tensor:
            masks = resize(a[ex, ch].unsqueeze(1), x.shape[2:], "bilinear", "scorecam",
                           align_corners)
            masks = minmax(masks, spatial(masks), 1e-8)
            return call.score(cam.model, params, (x[ex] * masks, *rows_of(others, ex)), ex)

        rows = batch_size or default_batch_size(call.inputs)
        kept = chunked(chunk, example, channel, batch_size=rows)
        weights = kept.reshape(a.shape[:2]).softmax(1)
        return cam.finish(weighted_channels(weights, a), call)

    return cam.attribution(compute, scorecam.__doc__, gradient=True)
