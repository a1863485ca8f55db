"""`fattr demo`: every method of the library on a few digits, one figure and one table.

A small CNN is trained on scikit-learn's bundled digits, upsampled to 32x32 so that its last
convolutional block keeps an 8x8 map for the CAMs; then every entry of `fattr.registry.METHODS`
explains the predicted class of a few test digits through `fattr.explain`'s builder. The table
gives each method's time per example, its deletion AUC (`fattr.metrics.deletion`, lower is
more faithful) and, for the methods that are complete, the largest |sum(a) - (f(x) - f(0))|.
"""

from __future__ import annotations

import math
import time
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

import fattr
from fattr.data.digits import accuracy, load_digits, train
from fattr.explain import build
from fattr.registry import METHODS, MethodInfo
from fattr.run.images import pixel_map

SIZE = 32
LAYER = "block3"


def digits_cam_cnn(size: int = SIZE) -> nn.Module:
    """Three conv blocks (the last at size/4 x size/4: the CAM layer) and a linear head."""
    return nn.Sequential(OrderedDict(
        block1=nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2)),
        block2=nn.Sequential(nn.Conv2d(8, 16, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2)),
        block3=nn.Sequential(nn.Conv2d(16, 16, 3, padding=1), nn.ReLU()),
        # the identity at `size`; other sizes (CAMERAS' upscaled inputs) pool to the same grid
        pool=nn.AdaptiveAvgPool2d(size // 4),
        flatten=nn.Flatten(), head=nn.Linear(16 * (size // 4) ** 2, 10)))


@dataclass
class Row:
    """One line of the demo's table."""

    method: str
    family: str
    seconds_per_example: float
    deletion: float
    gap: float | None


def options(info: MethodInfo, f: Any, x: Tensor, background: Tensor, seed: int,
            quick: bool) -> dict[str, Any]:
    """The demo's settings for one method (fewer steps and samples than the defaults)."""
    steps, samples = (8, 4) if quick else (32, 16)
    coarse = _blocks(x.shape[-1], 3)       # 9 features: exact Shapley takes 2^9 coalitions
    fine = _blocks(x.shape[-1], 8)         # 64 features of 4x4 pixels
    per_method: dict[str, dict[str, Any]] = {
        "integrated_gradients": {"steps": steps},
        "gradient_shap": {"samples": samples, "baselines": background},
        "blur_integrated_gradients": {"steps": steps, "max_sigma": 8.0},
        "guided_integrated_gradients": {"steps": steps},
        "deeplift_shap": {"baselines": background},
        "smooth_gradcam_plus_plus": {"samples": samples // 2},
        "sscam": {"samples": 2 if quick else 4},
        "cameras": {"scales": (1.0, 1.5, 2.0)},
        "xrai": {"resize": None, "min_size": 8, "scales": (5.0, 10.0, 20.0), "min_pixels": 4,
                 "dilation": 1, "attr_fn": fattr.integrated_gradients(f, steps=steps)},
        "layer_integrated_gradients": {"steps": steps},
        "internal_influence": {"steps": steps},
        "layer_conductance": {"steps": steps},
        "layer_gradient_shap": {"samples": samples, "baselines": background},
        "neuron_conductance": {"steps": steps, "neuron": (0, 2, 2)},
        "occlusion": {"window": (1, 4, 4), "stride": (1, 2, 2)},
        "feature_ablation": {"feature_mask": fine},
        "feature_permutation": {"feature_mask": fine},
        "shapley_values": {"feature_mask": coarse},
        "shapley_value_sampling": {"feature_mask": fine, "samples": 2 if quick else 8},
        "kernel_shap": {"feature_mask": fine, "samples": 4 * samples + 8},
        "lime": {"feature_mask": fine, "samples": 4 * samples + 8},
    }
    chosen = dict(per_method.get(info.name, {}))
    if info.family == "perturbation" or info.name == "layer_feature_ablation":
        chosen["batch_size"] = 512  # the default sends every perturbed input at once
    if info.family == "smoothgrad":
        chosen["samples"] = samples
    if info.stochastic:
        chosen["generator"] = torch.Generator().manual_seed(seed)
    return chosen


def demo(out: str | Path = "out/demo", examples: int = 6, seed: int = 0, *,
         quick: bool = False, epochs: int | None = None, progress: bool = True) -> list[Row]:
    """Train the digits CNN, run every method on `examples` test digits, write the figure
    `out/digits_attributions.png`, print the table and return its rows.

    `quick` runs fewer epochs, steps and samples (the test suite uses it).
    """
    out = Path(out)
    torch.manual_seed(seed)
    start = time.perf_counter()
    x_train, y_train, x_test, y_test = load_digits(seed, size=SIZE)
    model = train(digits_cam_cnn(), x_train, y_train, epochs=epochs or (1 if quick else 4),
                  seed=seed)
    print(f"trained a digits CNN ({SIZE}x{SIZE}) in {time.perf_counter() - start:.1f}s: "
          f"test accuracy {accuracy(model, x_test, y_test):.3f}")

    f, params = fattr.functional(model)
    x = x_test[:examples]
    target = model(x).argmax(1).detach()
    background = x_train[:8]
    maps: dict[str, Tensor] = {}
    rows: list[Row] = []
    for info in _progress(list(METHODS.values()), progress):
        kwargs = options(info, f, x, background, seed, quick)
        layer = LAYER if info.takes.startswith("model_layer") else None
        begin = time.perf_counter()
        attr, call = build(f, params, x, info.name, layer=layer, **kwargs)
        a = attr(params, x, target, **call).detach()
        seconds = (time.perf_counter() - begin) / len(x)
        pixels = pixel_map(a, x)
        deletion = fattr.metrics.deletion(f, params, x, pixels, target, steps=16).mean().item()
        gap = (_gap(f, params, x, a, target, kwargs.get("feature_mask")) if info.complete
               else None)
        maps[info.name] = pixels
        rows.append(Row(info.name, info.family, seconds, deletion, gap))
    _print_table(rows)
    path = out / "digits_attributions.png"
    _plot(x, target, maps, path)
    print(f"wrote {path}")
    return rows


def _blocks(side: int, per_side: int) -> Tensor:
    """Feature ids of a per_side x per_side grid of square blocks, shape (side, side)."""
    cell = torch.arange(side) * per_side // side
    return cell[:, None] * per_side + cell[None, :]


def _gap(f: Any, params: Any, x: Tensor, a: Tensor, target: Tensor,
         feature_mask: Tensor | None) -> float:
    """max over examples of |sum(a) - (f(x)_t - f(0)_t)|; with a feature mask every element of
    a group carries the group's value, so the sum runs over groups."""
    if feature_mask is not None:
        a = a / torch.bincount(feature_mask.flatten())[feature_mask]
    with torch.no_grad():
        both = f(params, torch.cat([x, torch.zeros_like(x)]))
    rows = torch.arange(len(x))
    rise = both[rows, target] - both[rows + len(x), target]
    return (a.flatten(1).sum(1) - rise).abs().max().item()


def _progress(items: list[MethodInfo], show: bool) -> Any:
    if not show:
        return items
    from tqdm import tqdm

    return tqdm(items, desc="methods", unit="method")


def _print_table(rows: list[Row]) -> None:
    print(f"{'method':<28} {'family':<13} {'ms/example':>10} {'deletion':>9} {'gap':>9}")
    for r in rows:
        gap = "-" if r.gap is None else f"{r.gap:.1e}"
        print(f"{r.method:<28} {r.family:<13} {1e3 * r.seconds_per_example:>10.2f} "
              f"{r.deletion:>9.3f} {gap:>9}")
    print("deletion: area under the target logit as the highest-ranked pixels are zeroed "
          "(lower is more faithful); gap: max |sum(a) - (f(x) - f(0))| for complete methods")


def _plot(x: Tensor, target: Tensor, maps: dict[str, Tensor], path: Path) -> None:
    """One panel per method, each a strip of the examples' maps (red positive, blue negative,
    each map scaled by its 99th percentile of |a|); the first panel shows the digits."""
    from matplotlib.figure import Figure

    from fattr.viz import normalize, save

    columns = 5
    panels = [("input (predicted class)", _strip([d[0] for d in x]), "gray", 0.0)]
    panels += [(name, _strip([normalize(m) for m in a]), "bwr", -1.0) for name, a in maps.items()]
    lines = math.ceil(len(panels) / columns)
    width = 0.55 * len(x) + 0.3
    fig = Figure(figsize=(columns * width, 0.95 * lines))
    for i, (name, strip, cmap, low) in enumerate(panels):
        ax = fig.add_subplot(lines, columns, i + 1)
        ax.imshow(strip, cmap=cmap, vmin=low, vmax=1.0, interpolation="nearest")
        title = name if i else f"{name}: {' '.join(str(t) for t in target.tolist())}"
        ax.set_title(title, fontsize=6, pad=2)
        ax.set_axis_off()
    fig.subplots_adjust(left=0.01, right=0.99, top=0.97, bottom=0.01, wspace=0.05, hspace=0.35)
    save(fig, path, dpi=150)


def _strip(images: list[Tensor]) -> Tensor:
    """Images (H, W) side by side with a one-pixel gap (NaN, drawn blank)."""
    gap = torch.full((images[0].shape[0], 1), float("nan"))
    parts = [p for image in images for p in (image.double(), gap.double())][:-1]
    return torch.cat(parts, dim=1)
