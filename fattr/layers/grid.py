"""`tokens_to_grid`: transformer layer outputs as (B, C, h, w) maps for CAMs."""

from __future__ import annotations

import math
from collections.abc import Callable

from einops import rearrange
from torch import Tensor

from fattr.errors import FattrError

LAYOUTS = ("bnc", "bhwc")


def tokens_to_grid(prefix_tokens: int = 1, layout: str = "bnc",
                   grid: tuple[int, int] | None = None) -> Callable[[Tensor], Tensor]:
    """A `reshape=` for CAMs on transformer layers: tokens -> (B, C, h, w).

    - `layout="bnc"` (ViT, DeiT, BEiT): the layer output is (B, N, C); the first `prefix_tokens`
      tokens (CLS, distillation, register tokens) are dropped and the remaining N' tokens are
      laid out row-major on an (h, w) grid. The grid is inferred as the square sqrt(N') x
      sqrt(N') unless `grid=(h, w)` is given (non-square inputs).
    - `layout="bhwc"` (torchvision Swin, ConvNeXt-style channels-last stages): the output is
      (B, H, W, C) and is permuted to (B, C, H, W); `prefix_tokens` is not used.

    Inferring the grid per call (instead of hard-coding 14x14 or 7x7, as pytorch-grad-cam's
    examples do) keeps one reshape valid for every image size.

    >>> cam = fattr.gradcam(f, "encoder.layers.encoder_layer_1.ln_1",
    ...                     reshape=fattr.tokens_to_grid(prefix_tokens=1))
    >>> swin = fattr.gradcam(f, "features.5", reshape=fattr.tokens_to_grid(layout="bhwc"))
    """
    if layout not in LAYOUTS:
        raise FattrError(f"tokens_to_grid: layout must be one of {', '.join(LAYOUTS)}, got "
                         f"{layout!r}.")
    if isinstance(prefix_tokens, bool) or not isinstance(prefix_tokens, int) or prefix_tokens < 0:
        raise FattrError(f"tokens_to_grid: prefix_tokens must be an int >= 0 (the CLS and "
                         f"other leading tokens to drop), got {prefix_tokens!r}.")
    if grid is not None and (len(grid) != 2 or not all(isinstance(g, int) and g > 0
                                                        for g in grid)):
        raise FattrError(f"tokens_to_grid: grid must be (h, w) with positive ints, got {grid!r}.")

    def bnc(tokens: Tensor) -> Tensor:
        if tokens.ndim != 3:
            raise FattrError(f"tokens_to_grid(layout='bnc'): expected a (B, N, C) layer output, "
                             f"got shape {tuple(tokens.shape)}.")
        patches = tokens[:, prefix_tokens:]
        n = patches.shape[1]
        h, w = grid if grid is not None else (math.isqrt(n), math.isqrt(n))
        if n == 0 or h * w != n:
            raise FattrError(
                f"tokens_to_grid: {n} tokens after dropping {prefix_tokens} prefix token(s) do "
                f"not fill a {h}x{w} grid. Pass grid=(h, w) for non-square inputs, or the right "
                "prefix_tokens.")
        return rearrange(patches, "b (h w) c -> b c h w", h=h, w=w)

    def bhwc(tokens: Tensor) -> Tensor:
        if tokens.ndim != 4:
            raise FattrError(f"tokens_to_grid(layout='bhwc'): expected a (B, H, W, C) layer "
                             f"output, got shape {tuple(tokens.shape)}.")
        return rearrange(tokens, "b h w c -> b c h w")

    reshape = bnc if layout == "bnc" else bhwc
    reshape.__qualname__ = f"tokens_to_grid(prefix_tokens={prefix_tokens}, layout={layout!r})"
    return reshape
