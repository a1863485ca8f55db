"""Images in (Pillow), maps out: what `fattr explain` and `fattr attribute` read and write."""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor

from fattr.errors import FattrError

SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm",
                      ".pgm"})
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
NORMALIZATIONS = ("imagenet", "none")


def find_images(root: str | Path, option: str = "--inputs") -> list[str]:
    """The image files under `root` (recursive, by suffix), as sorted POSIX paths relative to
    it: the keys of `fattr.run.load`."""
    root = Path(root)
    if not root.is_dir():
        raise FattrError(f"{option}: {str(root)!r} is not a folder of images.")
    found = sorted(p.relative_to(root).as_posix() for p in root.rglob("*")
                   if p.suffix.lower() in SUFFIXES and p.is_file())
    if not found:
        raise FattrError(f"{option}: no image files ({', '.join(sorted(SUFFIXES))}) under "
                         f"{str(root)!r}.")
    return found


def read_image(path: str | Path, size: int) -> Tensor:
    """An image file as RGB (3, size, size) in [0, 1] (bilinear resize). Raises whatever Pillow
    raises for a file it cannot decode."""
    from PIL import Image

    with Image.open(path) as image:
        rgb = image.convert("RGB").resize((size, size), Image.Resampling.BILINEAR)
    data = torch.frombuffer(bytearray(rgb.tobytes()), dtype=torch.uint8)
    return data.reshape(size, size, 3).permute(2, 0, 1).float() / 255.0


def normalized(images: Tensor, normalization: str) -> Tensor:
    """Model inputs from images (B, 3, H, W) in [0, 1]: ImageNet's mean and std, or as they are."""
    if normalization == "none":
        return images
    mean = torch.tensor(IMAGENET_MEAN, device=images.device).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD, device=images.device).view(1, 3, 1, 1)
    return (images - mean) / std


def pixel_map(a: Tensor, x: Tensor) -> Tensor:
    """One map per example at the input's size (B, 1, H, W): channels summed, layer-size maps
    (CAMs without upsampling, layer methods) resized bilinearly."""
    pixels = a.sum(1, keepdim=True)
    if pixels.shape[-2:] != x.shape[-2:]:
        pixels = F.interpolate(pixels, size=x.shape[-2:], mode="bilinear", align_corners=False)
    return pixels


def write_overlay(attribution: Tensor, image: Tensor, path: Path) -> Path:
    """The map blended over its image (`fattr.viz.image(mode="blend")`) as a PNG."""
    from fattr import viz

    fig = viz.image(attribution.detach().cpu(), image.detach().cpu(), mode="blend")
    return viz.save(fig, path)
