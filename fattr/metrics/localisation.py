"""Localisation against a ground-truth mask: the pointing game and relevance mass accuracy."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from fattr.core.checks import check_count
from fattr.errors import FattrError, FattrTypeError
from fattr.metrics.base import check_finite, check_maps, safe_divide


def check_mask(mask: object, attribution: Tensor, method: str) -> Tensor:
    """A mask (bool, or weights in [0, 1]) that broadcasts to the attribution (B, ...)."""
    if not isinstance(mask, Tensor):
        raise FattrTypeError(f"{method}: mask must be a tensor (bool, or weights in [0, 1]) shaped "
                         f"like the attribution {tuple(attribution.shape)}, got "
                         f"{type(mask).__name__}.")
    try:
        shape = torch.broadcast_shapes(mask.shape, attribution.shape)
    except RuntimeError:
        shape = None
    if shape != attribution.shape or mask.ndim != attribution.ndim:
        raise FattrError(f"{method}: mask of shape {tuple(mask.shape)} does not match the "
                         f"attribution of shape {tuple(attribution.shape)}; pass one mask per "
                         "example with the same number of axes (size-1 axes broadcast, e.g. "
                         "(B, 1, H, W) for all channels).")
    if mask.dtype == torch.bool:
        return mask.to(attribution.dtype).expand(attribution.shape)
    mask = check_finite(mask.to(attribution.dtype), method, "mask")
    if bool(((mask < 0) | (mask > 1)).any()):
        raise FattrError(f"{method}: mask values must lie in [0, 1] (1 = inside the region), got "
                         f"values in [{mask.min().item():g}, {mask.max().item():g}].")
    return mask.expand(attribution.shape)


def pointing_game(attribution: Tensor, mask: Tensor, tolerance: int = 0) -> Tensor:
    """1 where the attribution's maximum falls inside the mask, else 0.

        hit(a, m) = m[argmax(a)] > 0

    Args:
        attribution: (B, ...) maps, e.g. (B, 1, H, W) CAMs or (B, C, H, W) attributions. The
            maximum is over all elements after the batch axis (the first one on ties). One
            tensor: for a model with several inputs, pass the map of the input the mask
            belongs to.
        mask: the ground-truth region, bool or weights in [0, 1], broadcastable to the
            attribution with the same number of axes.
        tolerance: grow the mask by this many pixels over the last two axes (a square max-pool;
            Zhang et al. use 15 pixels at 224 x 224); default 0, the mask as given.

    Returns a Tensor (B,) of 0. and 1. in the attribution's dtype; the mean is the pointing
    accuracy. A blank map (all elements equal, e.g. all zero) points nowhere and scores 0,
    wherever the mask is (its argmax would be the first element).

    >>> fattr.metrics.pointing_game(fattr.gradcam(f, "layer4")(params, x, labels), boxes)

    Zhang, Bargal, Lin, Brandt, Shen, Sclaroff, "Top-down Neural Attention by Excitation
    Backprop" (2016), https://arxiv.org/abs/1608.00507
    """
    method = "pointing_game"
    attribution = check_maps(attribution, method)
    mask = check_mask(mask, attribution, method)
    check_count(tolerance, "tolerance", method, minimum=0)
    if tolerance:
        if attribution.ndim < 3:
            raise FattrError(f"{method}: tolerance grows the mask over two spatial axes, but "
                             f"the attribution has shape {tuple(attribution.shape)}.")
        flat = mask.reshape(-1, 1, *mask.shape[-2:])
        grown = F.max_pool2d(flat, 2 * tolerance + 1, stride=1, padding=tolerance)
        mask = grown.reshape(mask.shape)
    flat = attribution.detach().flatten(1)
    peak = flat.argmax(1, keepdim=True)
    hit = (mask.flatten(1).gather(1, peak).squeeze(1) > 0) & (flat.amax(1) > flat.amin(1))
    return hit.to(attribution.dtype)


def relevance_mass(attribution: Tensor, mask: Tensor, sign: str = "absolute") -> Tensor:
    """The share of the attribution's mass that lies inside the mask.

        RMA(a, m) = sum(r * m) / sum(r),   r = |a| ("absolute") or max(a, 0) ("positive")

    Args:
        attribution: (B, ...) maps (one tensor: for a model with several inputs, pass the map
            of the input the mask belongs to).
        mask: the ground-truth region, bool or weights in [0, 1], broadcastable to the
            attribution with the same number of axes.
        sign: "absolute" (default; magnitudes, the planted-trigger score) or "positive" (only
            positive relevance, as Arras et al.).

    Returns a Tensor (B,) in [0, 1] (0 for an all-zero map), differentiable in the attribution.

    Arras, Osman, Samek, "CLEVR-XAI: A benchmark dataset for the ground truth evaluation of
    neural network explanations" (2022), https://arxiv.org/abs/2003.07258
    """
    method = "relevance_mass"
    attribution = check_maps(attribution, method)
    mask = check_mask(mask, attribution, method)
    if not isinstance(sign, str) or sign not in ("absolute", "positive"):
        raise FattrError(f"{method}: sign must be 'absolute' or 'positive', got {sign!r}.")
    if sign == "absolute":
        mass = attribution.abs()
    else:
        mass = attribution.clamp(min=0)
    return safe_divide((mass * mask).flatten(1).sum(1), mass.flatten(1).sum(1))
