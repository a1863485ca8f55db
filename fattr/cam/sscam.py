"""SS-CAM (Wang et al. 2020): Score-CAM with noisy masks, batched across images, channels and
samples."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor

from fattr.cam.engine import LayerCam, Reshape, Upsample, minmax, resize, spatial
from fattr.cam.scorecam import channel_rows, weighted_channels
from fattr.core.call import Call
from fattr.core.checks import check_count, check_generator, check_non_negative
from fattr.core.chunking import check_batch_size, chunked
from fattr.core.inputs import rows_of
from fattr.core.model import ModelFn, Params
from fattr.errors import FattrError
from fattr.layers.taps import LayerSpec


class BlockNoise:
    """N(0, stdev^2) rows of shape `block[1:]`, drawn `block[0]` rows at a time, in order.

    Rows are handed out in the order they are asked for and drawn in fixed blocks, so the
    values do not depend on how the caller chunks its rows, and at most one block is held
    beyond the rows in use (drawing every noise map of every sample at once can take gigabytes).
    """

    def __init__(self, block: tuple[int, ...], stdev: float, generator: torch.Generator | None,
                 like: Tensor):
        self.block, self.stdev, self.generator, self.like = block, stdev, generator, like
        self.left = like.new_zeros((0, *block[1:]))

    def take(self, n: int) -> Tensor:
        parts, have = [self.left], self.left.shape[0]
        while have < n:
            parts.append(self.stdev * torch.randn(self.block, generator=self.generator,
                                                  dtype=self.like.dtype, device=self.like.device))
            have += self.block[0]
        rows = torch.cat(parts) if len(parts) > 1 else parts[0]
        self.left = rows[n:]
        return rows[:n]


def sscam(f: ModelFn, layer: LayerSpec, samples: int = 35, stdev: float = 2.0,
          relu: bool = True, upsample: Upsample = True, batch_size: int | None = 64, *,
          align_corners: bool = False, reshape: Reshape = None,
          output: Callable[[Any], Tensor] | None = None) -> Callable[..., Tensor]:
    """SS-CAM: Score-CAM whose channel scores are averaged over noisy masks.

        M_c = minmax(up(A_c)) in [0, 1]   (as `fattr.scorecam`)
        s_c = mean_s y_t(x * (M_c + e_sc)),   e_sc ~ N(0, stdev^2) per mask pixel
        w = softmax_c(s),   map = ReLU(sum_c w_c A_c)

    Gradient-free. With stdev=0 this is `fattr.scorecam`. All samples * B * C masked
    inputs go through the model in chunks of `batch_size`, mixed across samples, images and
    channels; the scores are summed per (image, channel) as the chunks come.

    Args: as `fattr.scorecam`, plus
        samples: noisy copies of every mask (default 35, as torchcam).
        stdev: standard deviation of the noise added to the [0, 1] masks (default 2.0, as
            torchcam; absolute, in mask units).
        batch_size: the most masked inputs per forward call (default 64; None sends all
            samples * B * C at once). The result does not depend on it.

    Returns `attr(params, x, target=None, *, generator=None)` -> (B, 1, H, W) raw maps (the
    layer's size without `upsample`), differentiable in params and x. The noise maps are drawn
    from `generator` (the global RNG if None) as `stdev * torch.randn((C, H, W))`, one block per
    sample and image in the order (sample, image): the same generator state gives the same map
    for any batch_size. Under `vmap` (e.g. over targets) pass `randomness="same"` to vmap.

    >>> maps = fattr.sscam(f, "layer4", samples=8, batch_size=256)(params, x, labels)

    Differences from torchcam 0.5.0's SSCAM (same defaults, same noise on the masks): torchcam
    min-max normalizes each channel at the layer's size and then upsamples; fattr upsamples
    first (pytorch-grad-cam's Score-CAM order, so that stdev=0 is `fattr.scorecam`). The two
    agree where upsampling keeps each channel's extremes, e.g. 2x2 or input-sized layers.
    torchcam subtracts the clean input's score before the softmax, which does not change it.

    Wang, Wang, Du, Yang, Zhang, Ding, Mardziel, Hu, "SS-CAM: Smoothed Score-CAM for Sharper
    Visual Feature Localization" (2020), https://arxiv.org/abs/2006.14255
    """
    method = "sscam"
    check_count(samples, "samples", method)
    check_non_negative(stdev, "stdev", method)
    check_batch_size(batch_size, method)
    if not isinstance(align_corners, bool):
        raise FattrError(f"{method}: align_corners must be True or False, got {align_corners!r}.")
    cam = LayerCam(f, layer, relu, upsample, reshape, output, method)

    def compute(params: Params, call: Call, *, generator: torch.Generator | None = None,
                ) -> Tensor:
        check_generator(generator, method)
        x, *others = call.inputs  # the masks apply to the first input
        a = cam.activations(params, call)
        example, channel = channel_rows(a)
        pair = torch.arange(example.shape[0], device=x.device)
        noise = BlockNoise((a.shape[1], *x.shape[2:]), stdev, generator, x)

        def chunk(ex: Tensor, ch: Tensor) -> Tensor:
            masks = resize(a[ex, ch].unsqueeze(1), x.shape[2:], "bilinear", method,
                           align_corners)
            masks = minmax(masks, spatial(masks), 1e-8)
            if stdev:
                masks = masks + noise.take(ex.shape[0]).unsqueeze(1)
            return call.score(cam.model, params, (x[ex] * masks, *rows_of(others, ex)), ex)

        total = chunked(chunk, example.repeat(samples), channel.repeat(samples),
                        batch_size=batch_size, segments=(pair.repeat(samples), pair.shape[0]))
        weights = (total / samples).reshape(a.shape[:2]).softmax(1)
        return cam.finish(weighted_channels(weights, a), call)

    return cam.attribution(compute, sscam.__doc__, gradient=True)
