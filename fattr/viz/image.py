"""Matplotlib figures of image attributions: one map, a grid of images x methods, saving.

matplotlib (the `viz` extra) is imported when a figure is made. Figures are built with
`matplotlib.figure.Figure` on an Agg canvas (no pyplot state, no GUI; they display in
Jupyter and save to any format).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from fattr.errors import FattrError, FattrTypeError
from fattr.viz.normalize import as_tensor, check_sign, normalize, spatial_map

MODES = ("heat", "blend", "mask", "alpha")
CMAPS = {"all": "bwr", "positive": "Reds", "negative": "Blues", "absolute": "magma"}


def as_image(image: Any, method: str) -> Tensor:
    """(H, W), (C, H, W) or (1, C, H, W) with C in {1, 3} -> (H, W, 3) in [0, 1] (min-max)."""
    given = as_tensor(image, "image", method)
    x = given[0] if given.ndim == 4 and given.shape[0] == 1 else given
    if x.ndim == 2:
        x = x[None]
    if x.ndim != 3 or x.shape[0] not in (1, 3) or x.numel() == 0:
        raise FattrError(f"{method}: image must be (H, W), (C, H, W) or (1, C, H, W) with C = 1 "
                         f"or 3 (channels first, as torch), got shape {tuple(given.shape)}.")
    low, high = x.min(), x.max()
    x = (x - low) / (high - low) if high > low else torch.zeros_like(x)
    return x.expand(3, -1, -1).permute(1, 2, 0)


def _check_sizes(attribution: Any, map_size: tuple, image_size: tuple, method: str) -> None:
    """A map of another size than the image is resized to it only when it is a coarser map of
    the same picture (a CAM at layer size: one channel, same aspect ratio, smaller); a
    per-channel map or a different aspect ratio means the map belongs to another image."""
    if tuple(map_size) == tuple(image_size):
        return
    shape = tuple(getattr(attribution, "shape", ()))
    channels = shape[-3] if len(shape) >= 3 else 1
    same_aspect = abs(map_size[0] * image_size[1] - map_size[1] * image_size[0]) <= \
        max(map_size[0], map_size[1])  # rounding of odd layer sizes
    if channels > 1 or not same_aspect or map_size[0] > image_size[0]:
        raise FattrError(
            f"{method}: the attribution {shape} does not belong to the image of size "
            f"{tuple(image_size)}: only a one-channel map at a coarser size with the same aspect "
            "ratio (a CAM at layer size) is resized to the image. Pass the image the map was "
            "computed for (or resize the map yourself).")


def compose(attribution: Any, image: Any = None, mode: str = "heat", sign: str = "all",
            clip_percentile: float = 99.0, cmap: str | None = None,
            method: str = "image") -> tuple[Any, dict[str, Any]]:
    """The array to draw and its `imshow` keywords: (H, W) map with a colormap for "heat", an
    RGBA array otherwise. The map is resized (bilinear) to the image's size when they differ."""
    import matplotlib

    if mode not in MODES:
        raise FattrError(f"{method}: mode must be one of {', '.join(MODES)}, got {mode!r}.")
    check_sign(sign, method)
    values = normalize(spatial_map(attribution, method), sign, clip_percentile, method=method)
    colormap = matplotlib.colormaps[cmap or CMAPS[sign]]
    low = -1.0 if sign == "all" else 0.0
    if mode == "heat":
        return values.numpy(), {"cmap": colormap, "vmin": low, "vmax": 1.0}
    if image is None:
        raise FattrError(f"{method}: mode {mode!r} draws over the input image; pass image=, or "
                         "use mode='heat' for the map alone.")
    picture = as_image(image, method)
    _check_sizes(attribution, values.shape, picture.shape[:2], method)
    if values.shape != picture.shape[:2]:  # e.g. a CAM at layer size
        values = F.interpolate(values[None, None], size=picture.shape[:2], mode="bilinear",
                               align_corners=False)[0, 0]
    if mode == "blend":  # gray image under the coloured map, half and half
        gray = picture.mean(2, keepdim=True).expand(-1, -1, 3)
        heat = torch.from_numpy(colormap((values - low) / (1 - low))[..., :3])
        rgb = 0.5 * gray + 0.5 * heat
        rgba = torch.cat([rgb, torch.ones_like(rgb[..., :1])], 2)
    elif mode == "mask":  # the image scaled by |map|
        rgba = torch.cat([picture * values.abs()[..., None], torch.ones_like(values)[..., None]], 2)
    else:  # alpha: the image with |map| as opacity
        rgba = torch.cat([picture, values.abs()[..., None]], 2)
    return rgba.numpy(), {}


def _figure(rows: int, cols: int, size: float, aspect: float) -> Any:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(cols * size * aspect, rows * size))
    FigureCanvasAgg(fig)  # renders without a GUI: fig.canvas.draw(), buffer_rgba()
    return fig


def image(attribution: Any, image: Any = None, mode: str = "heat", sign: str = "all",
          clip_percentile: float = 99.0, *, cmap: str | None = None, title: str | None = None,
          size: float = 4.0) -> Any:
    """One attribution map as a matplotlib Figure.

    Args:
        attribution: one map (H, W), (C, H, W) (channels are summed, as captum) or
            (1, C, H, W); a tensor or numpy array. CAMs at layer size are resized to the image.
        image: the input (H, W), (C, H, W) or (1, C, H, W), channels first, C = 1 or 3; shown
            min-max scaled to [0, 1]. Needed by "blend", "mask" and "alpha"; "heat" ignores it.
        mode: "heat" (the map alone, default), "blend" (gray image under the coloured map, half
            and half), "mask" (image times |map|), "alpha" (image with |map| as opacity).
        sign: which part of the map to show: "all" (signed, [-1, 1], blue-white-red), "positive",
            "negative" or "absolute" ([0, 1]).
        clip_percentile: the scale is this percentile of |map| (default 99; larger values
            saturate). See `fattr.viz.normalize`.
        cmap: a matplotlib colormap name (default by sign: bwr, Reds, Blues, magma).
        title: optional axes title.
        size: figure height in inches.

    Returns a `matplotlib.figure.Figure` with one axes that fills it (no ticks); the drawn
    array is `fig.axes[0].images[0].get_array()`.

    >>> fig = fattr.viz.image(a[0], x[0], mode="blend", sign="positive")
    >>> fattr.viz.save(fig, "out/ig.png")
    """
    array, style = compose(attribution, image, mode, sign, clip_percentile, cmap, "image")
    height, width = array.shape[:2]
    fig = _figure(1, 1, size, width / height)
    ax = fig.add_axes((0.0, 0.0, 1.0, 0.92 if title else 1.0))
    ax.imshow(array, interpolation="nearest", **style)
    ax.set_axis_off()
    if title:
        ax.set_title(title)
    return fig


def grid(attributions: Mapping[str, Any] | Any, images: Any = None, mode: str = "heat",
         sign: str = "all", clip_percentile: float = 99.0, *, cmap: str | None = None,
         size: float = 2.0) -> Any:
    """Several images x several methods in one Figure: one row per image, one column per
    method (after a first column with the image itself when `images` is given).

    Args:
        attributions: {method name: maps (N, C, H, W), (N, 1, H, W) or (N, H, W)}, every entry
            with the same N; a single tensor is one unnamed method.
        images: the inputs (N, C, H, W) or (N, H, W), or None.
        mode, sign, clip_percentile, cmap: as for `fattr.viz.image`; every map is normalised
            on its own.
        size: height of one cell in inches.

    Returns a `matplotlib.figure.Figure` with N x (methods + 1 if images) axes, row-major.

    >>> fattr.viz.grid({"IG": ig(params, x, y), "Grad-CAM": cam(params, x, y)}, x)
    """
    method = "grid"
    if not isinstance(attributions, Mapping):
        attributions = {"": attributions}
    if not attributions:
        raise FattrError(f"{method}: attributions is empty; pass {{name: maps (N, ...)}}.")
    batches = {}
    for name, maps in attributions.items():
        if not isinstance(name, str):
            raise FattrTypeError(f"{method}: method names must be str, got {name!r}.")
        batches[name] = as_tensor(maps, f"attributions[{name!r}]", method)
    counts = {name: (t.shape[0] if t.ndim >= 3 else None) for name, t in batches.items()}
    if images is not None:
        pictures = as_tensor(images, "images", method)
        counts["images"] = pictures.shape[0] if pictures.ndim >= 3 else None
    if None in counts.values() or len(set(counts.values())) != 1:
        shapes = {name: tuple(t.shape) for name, t in batches.items()}
        if images is not None:
            shapes["images"] = tuple(pictures.shape)
        raise FattrError(f"{method}: every entry needs a batch axis (N, [C,] H, W) with the same "
                         f"N, got shapes {shapes}.")
    rows = next(iter(counts.values()))
    if rows == 0:
        raise FattrError(f"{method}: the batch is empty (N = 0); nothing to draw.")
    columns = ([("image", None)] if images is not None else []) + list(batches.items())
    first = next(iter(batches.values()))[0]
    height, width = spatial_map(first, method).shape
    fig = _figure(rows, len(columns), size, width / height)
    axes = fig.subplots(rows, len(columns), squeeze=False)
    for r in range(rows):  # one small figure cell per (image, method): drawing, not compute
        for c, (name, maps) in enumerate(columns):
            ax = axes[r][c]
            picture = pictures[r] if images is not None else None
            if maps is None:
                ax.imshow(as_image(picture, method), interpolation="nearest")
            else:
                array, style = compose(maps[r], picture, mode, sign, clip_percentile, cmap,
                                       method)
                ax.imshow(array, interpolation="nearest", **style)
            ax.set_axis_off()
            if r == 0 and name:
                ax.set_title(name)
    return fig


def save(fig: Any, path: str | Path, *, dpi: float | None = None) -> Path:
    """Write a figure to `path` (format from the suffix: png, pdf, svg, ...), creating the
    folder; returns the path."""
    from matplotlib.figure import Figure

    if not isinstance(fig, Figure):
        raise FattrTypeError(f"save: fig must be a matplotlib Figure (from fattr.viz.image or "
                             f"grid), got {type(fig).__name__}.")
    path = Path(path)
    formats = fig.canvas.get_supported_filetypes()
    if path.suffix.lstrip(".").lower() not in formats:
        raise FattrError(f"save: cannot tell the file format from {str(path)!r}; end the name "
                         f"with one of {', '.join('.' + f for f in sorted(formats))}.")
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=dpi)
    return path
