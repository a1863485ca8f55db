"""Six methods on one torchvision resnet18: CAMs, modified backprop, LRP and occlusion.

A resnet18 with random weights (nothing is downloaded; the maps show how each method reads
the network, not what it learned) explains one 64x64 photograph, scikit-image's bundled
astronaut, for class 0. Every method has the same call, `attr(params, x, target)`:
- `gradcam(f, "layer4")` and `layercam(f, "layer3")`: (1, 1, 64, 64), raw (no min-max);
- `guided_backprop`, `deeplift` (baseline 0) and `lrp` ("epsilon_plus_flat"): like x;
- `occlusion` with 16x16 windows moved by 8 pixels: like x, forward passes only.
The script prints each method's runtime and DeepLIFT's completeness gap (sum of the map minus
f(x) - f(0): exact up to float rounding on a ReLU network) and saves a grid of the maps.

Run: .venv/bin/python examples/compare_methods_resnet.py   (writes out/examples/resnet18.png;
needs scikit-image and torchvision, both in the test extra)
"""

from __future__ import annotations

import time
from pathlib import Path

import torch
import torchvision
from skimage import data

import fattr

OUT = Path("out/examples")


def astronaut(size: int) -> torch.Tensor:
    """(1, 3, size, size), standardized per channel."""
    image = torch.tensor(data.astronaut(), dtype=torch.float32).permute(2, 0, 1)[None] / 255
    image = torch.nn.functional.interpolate(image, size=(size, size), mode="area")
    return (image - image.mean((2, 3), keepdim=True)) / image.std((2, 3), keepdim=True)


def main(size: int = 64, out: Path = OUT) -> dict:
    torch.manual_seed(0)
    model = torchvision.models.resnet18(num_classes=10).eval()
    f, params = fattr.functional(model)
    x, target = astronaut(size), 0
    methods = {
        "Grad-CAM layer4": fattr.gradcam(f, "layer4"),
        "LayerCAM layer3": fattr.layercam(f, "layer3"),
        "guided backprop": fattr.guided_backprop(f),
        "DeepLIFT": fattr.deeplift(f),
        "LRP eps+flat": fattr.lrp(f, "epsilon_plus_flat"),
        "occlusion 16/8": fattr.occlusion(f, (3, 16, 16), stride=(3, 8, 8), batch_size=64),
    }
    maps, seconds = {}, {}
    for name, method in methods.items():
        start = time.perf_counter()
        maps[name] = method(params, x, target)
        seconds[name] = time.perf_counter() - start
        print(f"{name:16s} {seconds[name]:6.3f} s   map {tuple(maps[name].shape)}")

    gap = fattr.completeness_gap(f, params, x, maps["DeepLIFT"], target).abs().item()
    rise = (f(params, x) - f(params, torch.zeros_like(x)))[0, target].item()
    print(f"DeepLIFT: f(x) - f(0) = {rise:.4f}, |sum(map) - (f(x) - f(0))| = {gap:.1e}")

    path = fattr.viz.save(fattr.viz.grid(maps, x), Path(out) / "resnet18.png")
    print(f"wrote {path}")
    return {"maps": maps, "seconds": seconds, "deeplift gap": gap, "rise": rise, "figure": path}


if __name__ == "__main__":
    main()
