"""Perturbation methods: fattr against captum, in one process, on the same inputs.

torchvision resnet18 (random weights, randomized BatchNorm statistics, eval mode) at 64x64,
batch 4. Both libraries send the same number of images through each forward call. captum runs
with `perturbations_per_eval=32`, which means 32 perturbations of the whole batch (128 images)
for Occlusion and FeatureAblation, at most one ordering's F prefixes of the batch for the
Shapley methods (16 x 4 = 64 images for 16 features, 4 x 4 = 16 for 4), and 32 images for
KernelShap and Lime (captum explains one example at a time); fattr's `batch_size` is set to the
same count. Each table's ratios are against its first captum row.

Times and peak memory come from `benchmarks.harness.compare` (interleaved rounds, median of 3
after one warm-up; peak resident memory one call adds).

    .venv/bin/python benchmarks/bench_perturbation.py
"""

from __future__ import annotations

import sys
from pathlib import Path

import captum.attr as ca
import torch
import torchvision

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import fattr
from benchmarks.harness import compare, markdown

PER_EVAL = 32  # captum: perturbations per forward


def grid(cells: int, size: int = 64) -> torch.Tensor:
    """A (1, 1, size, size) mask of cells x cells square superpixels, shared by the channels."""
    side = size // cells
    ids = torch.arange(cells * cells).reshape(cells, cells)
    return ids.repeat_interleave(side, 0).repeat_interleave(side, 1)[None, None]


def tables() -> list[tuple[str, dict]]:
    """(title, {name: fn}) for every comparison (the first entry is the reference)."""
    torch.manual_seed(0)
    net = torchvision.models.resnet18(num_classes=10)
    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-0.2, 0.2)
                m.running_var.uniform_(0.5, 1.5)
    net.eval()
    f, params = fattr.functional(net)
    x = torch.randn(4, 3, 64, 64)
    target = torch.tensor([1, 2, 3, 4])
    g = lambda: torch.Generator().manual_seed(0)
    superpixels, sixteen, quadrants = grid(8), grid(4), grid(2)

    occ = fattr.occlusion(f, (3, 8, 8), (3, 4, 4), batch_size=4 * PER_EVAL)
    abl = fattr.feature_ablation(f, batch_size=4 * PER_EVAL)
    svs = fattr.shapley_value_sampling(f, samples=8, batch_size=4 * 16)
    exact = fattr.shapley_values(f, batch_size=4 * 4)
    ks = fattr.kernel_shap(f, samples=100, batch_size=PER_EVAL)
    lime = fattr.lime(f, samples=100, batch_size=PER_EVAL)
    per_eval = {"target": target, "perturbations_per_eval": PER_EVAL}
    return [
        ("Occlusion, window (3, 8, 8), stride (3, 4, 4): 225 positions x 4 images", {
            "captum Occlusion": lambda: ca.Occlusion(net).attribute(
                x, sliding_window_shapes=(3, 8, 8), strides=(3, 4, 4), **per_eval),
            "fattr occlusion": lambda: occ(params, x, target)}),
        ("Feature ablation, 8x8 superpixels (64 features) x 4 images", {
            "captum FeatureAblation": lambda: ca.FeatureAblation(net).attribute(
                x, feature_mask=superpixels, **per_eval),
            "fattr feature_ablation": lambda: abl(params, x, target, feature_mask=superpixels)}),
        ("Shapley value sampling, 16 superpixels, 8 orderings; exact Shapley on 4 quadrants "
         "(ratios vs captum ShapleyValueSampling)", {
            "captum ShapleyValueSampling": lambda: ca.ShapleyValueSampling(net).attribute(
                x, feature_mask=sixteen, n_samples=8, **per_eval),
            "fattr shapley_value_sampling": lambda: svs(params, x, target, feature_mask=sixteen,
                                                        generator=g()),
            "captum ShapleyValues (exact, 4 features)": lambda: ca.ShapleyValues(net).attribute(
                x, feature_mask=quadrants, **per_eval),
            "fattr shapley_values (exact, 4 features)": lambda: exact(params, x, target,
                                                                      feature_mask=quadrants)}),
        ("KernelSHAP and LIME, 64 superpixels, 100 samples x 4 images (ratios vs captum "
         "KernelShap)", {
            "captum KernelShap": lambda: ca.KernelShap(net).attribute(
                x, feature_mask=superpixels, n_samples=100, **per_eval),
            "fattr kernel_shap": lambda: ks(params, x, target, feature_mask=superpixels,
                                            generator=g()),
            "captum Lime (Lasso surrogate)": lambda: ca.Lime(net).attribute(
                x, feature_mask=superpixels, n_samples=100, **per_eval),
            "fattr lime (ridge surrogate)": lambda: lime(params, x, target,
                                                         feature_mask=superpixels,
                                                         generator=g())}),
    ]


def main() -> str:
    parts = []
    for title, fns in tables():
        parts.append(markdown(compare(fns, reference=next(iter(fns)), rounds=3, warmup=1),
                              title))
        print(parts[-1] + "\n", file=sys.stderr, flush=True)
    return "\n\n".join(parts)


if __name__ == "__main__":
    print(main())
