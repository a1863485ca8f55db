"""Gaussian blur over the spatial axes, for a whole set of sigmas in one call.

Matches `scipy.ndimage.gaussian_filter(..., mode="constant")` with the default truncation at
4 sigma: kernel radius int(4 sigma + 0.5), weights exp(-t^2 / (2 sigma^2)) normalised to sum
one, zero padding. Sigma 0 leaves the image unchanged. Separable: one conv1d per spatial axis
with all sigmas as output channels, so S blurs cost two convolutions, not a loop.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


def gaussian_kernels(sigmas: Tensor) -> Tensor:
    """(S,) sigmas -> (S, 2R+1) kernels, each truncated at its own radius and zero-padded to
    the largest radius R."""
    radii = (4.0 * sigmas + 0.5).floor()
    big = int(radii.max().item()) if sigmas.numel() else 0
    t = torch.arange(-big, big + 1, dtype=sigmas.dtype, device=sigmas.device)
    safe = torch.where(sigmas > 0, sigmas, torch.ones_like(sigmas))[:, None]
    kernels = torch.exp(-0.5 * (t / safe) ** 2) * (t.abs() <= radii[:, None])
    delta = (t == 0).to(sigmas.dtype).expand_as(kernels)
    kernels = torch.where(sigmas[:, None] > 0, kernels, delta)
    return kernels / kernels.sum(1, keepdim=True)


def blur_stack(x: Tensor, sigmas: Tensor) -> Tensor:
    """x (B, C, H, W) blurred over H and W with every sigma: (S, B, C, H, W)."""
    batch, channels, height, width = x.shape
    steps = sigmas.shape[0]
    kernels = gaussian_kernels(sigmas.to(x.dtype))
    pad = (kernels.shape[1] - 1) // 2
    rows = x.reshape(batch * channels * height, 1, width)
    along_w = F.conv1d(rows, kernels[:, None], padding=pad)  # (BCH, S, W)
    along_w = along_w.reshape(batch * channels, height, steps, width).permute(0, 3, 2, 1)
    cols = along_w.reshape(batch * channels * width, steps, height)
    along_h = F.conv1d(cols, kernels[:, None], padding=pad, groups=steps)  # (BCW, S, H)
    out = along_h.reshape(batch, channels, width, steps, height)
    return out.permute(3, 0, 1, 4, 2)
