"""Ablation-CAM (Desai and Ramaswamy 2020), batched across images and channels."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor
from torch.func import vjp

from fattr.cam.engine import LayerCam, Reshape, Upsample
from fattr.cam.scorecam import weighted_channels
from fattr.core.call import Call
from fattr.core.chunking import check_batch_size, default_batch_size
from fattr.core.model import ModelFn, Params
from fattr.layers.edits import edited_scores
from fattr.layers.taps import LayerSpec


def one_channel(channel: Tensor, maps: Tensor) -> Tensor:
    """Indicator of channel[r] in row r of (N, C, *s) maps, shaped like the maps."""
    chosen = torch.arange(maps.shape[1], device=maps.device) == channel[:, None]
    return chosen.reshape(*chosen.shape, *([1] * (maps.ndim - 2))).to(maps.dtype).expand(maps.shape)


def ablationcam(f: ModelFn, layer: LayerSpec, relu: bool = True, upsample: Upsample = True,
                batch_size: int | None = None, *, reshape: Reshape = None,
                output: Callable[[Any], Tensor] | None = None) -> Callable[..., Tensor]:
    """Ablation-CAM: each channel is weighted by the relative drop in score when it is zeroed.

        w_c = (y_t - y_t(A with channel c set to 0)) / y_t,   map = ReLU(sum_c w_c A_c)

    Gradient-free. The B * C ablated forward passes run in chunks of `batch_size` mixed across
    images and channels (pytorch-grad-cam loops over images in Python), and they do not compute
    the layer again: a rewritten copy of the model replays its recorded output with the channel
    zeroed (`Tap.replayed`; a layer that returns a tuple is computed and edited instead). In
    a plain eager call the layers BEFORE the tapped one run once per image and chunk, on one
    row: the replayed output carries the chunk's ablated rows, and what follows the layer sees
    them as a batch (2.4x pytorch-grad-cam's speed on resnet18 layer3 at an equal chunk); a
    model that needs the input's batch size after the layer fails a two-row check and takes
    the general path, as do calls with per-example model arguments or under a transform. With
    `reshape`, channel c means channel c of the reshaped maps (for ViT: feature c of every patch
    token, the CLS token untouched); `reshape` must then only select and permute elements, as
    `tokens_to_grid` does. pytorch-grad-cam sets the channel to zero only when the layer's
    minimum is 0 and to (minimum - 1e7) otherwise; fattr always uses zero, as the paper. The
    weights divide by y_t, so a target score near zero gives huge weights (as in the paper).

    Args: as `fattr.gradcam`, plus `batch_size`: the most ablated inputs per forward call
    (None, the default, picks a chunk from the input size: about 2**19 input elements per call
    on the CPU, 2**24 on a GPU, `fattr.core.chunking.default_batch_size`; pytorch-grad-cam sends
    32). The result does not depend on it.

    Returns (B, 1, H, W) maps, differentiable in params and x.

    >>> maps = fattr.ablationcam(f, "layer4")(params, x, target=labels)

    Desai, Ramaswamy, "Ablation-CAM: Visual Explanations for Deep Convolutional Network via
    Gradient-free Localization" (2020),
    https://openaccess.thecvf.com/content_WACV_2020/papers/Desai_Ablation-CAM_Visual_Explanations_for_Deep_Convolutional_Network_via_Gradient-free_Localization_WACV_2020_paper.pdf
    """
    check_batch_size(batch_size, "ablationcam")
    cam = LayerCam(f, layer, relu, upsample, reshape, output, "ablationcam")

    def without(channel: Tensor, t: Tensor) -> Tensor:
        """The raw layer output t (one row per ablation) with each row's channel zeroed."""
        if cam.reshape is None:
            return t * (1 - one_channel(channel, cam.grid(t)))
        grid, pullback = vjp(cam.grid, t)  # where each grid channel sits in the raw layout
        return t * (1 - pullback(one_channel(channel, grid))[0])

    def compute(params: Params, call: Call) -> Tensor:
        out, recorded = cam.tap.run(params, call, call.inputs)
        raw = cam.tap.one(recorded)
        y = call.target.select(out)
        a = cam.grid(raw)
        rows = batch_size or default_batch_size(call.inputs)
        dropped = edited_scores(cam.tap, params, call, raw, y,
                                lambda ch, ex: without(ch, raw[ex]), a.shape[1], rows)
        weights = (y.unsqueeze(1) - dropped) / y.unsqueeze(1)
        return cam.finish(weighted_channels(weights, a), call)

    return cam.attribution(compute, ablationcam.__doc__)

