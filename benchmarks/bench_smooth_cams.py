"""Smooth Grad-CAM++ and SS-CAM against torchcam 0.5.0, in one process, on the same inputs.

torchvision resnet18 (random weights), float32, one intra-op thread.

1. Smooth Grad-CAM++ at layer4, 4 images 112x112, torchcam's defaults (4 samples, std 0.3):
   torchcam runs one forward and backward pass of the batch per sample; fattr sends all
   4 * 4 noisy inputs through one pass (batch_size=None) or 4 at a time (batch_size=4).
2. SS-CAM at layer3 (256 channels), 2 images 32x32 (2x2 maps), 4 samples (torchcam's 35
   would take minutes), std 2.0: 2048 masked inputs. torchcam loops over samples and sends
   32 masked inputs per forward; fattr mixes samples, images and channels in chunks of
   `batch_size`.

Times from `benchmarks.harness.compare` (interleaved rounds, median); peak memory is the
resident memory one call adds.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/bench_smooth_cams.py
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")

import sys
from pathlib import Path

import torch
import torchvision
from torchcam.methods import SSCAM, SmoothGradCAMpp

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import fattr
from benchmarks.harness import compare, markdown

torch.set_num_threads(1)


def resnet18() -> torch.nn.Module:
    torch.manual_seed(0)
    net = torchvision.models.resnet18(num_classes=10)
    with torch.no_grad():  # non-trivial BatchNorm statistics
        for m in net.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-0.2, 0.2)
                m.running_var.uniform_(0.5, 1.5)
    return net.eval()


def torchcam_smooth(net, x, targets):
    with SmoothGradCAMpp(net, "layer4") as extractor:
        scores = net(x)
        return extractor(class_idx=targets, scores=scores, normalized=False)[0]


def torchcam_sscam(net, x, targets, samples):
    with SSCAM(net, "layer3", batch_size=32, num_samples=samples, std=2.0) as extractor:
        with torch.no_grad():
            net(x)
        return extractor(class_idx=targets, normalized=False)[0]


def main() -> None:
    net = resnet18()
    f, params = fattr.functional(net)
    generator = lambda: torch.Generator().manual_seed(0)

    x = torch.randn(4, 3, 112, 112, generator=generator())
    targets = [0, 1, 2, 3]
    whole = fattr.smooth_gradcam_plus_plus(f, "layer4", upsample=False)
    chunks = fattr.smooth_gradcam_plus_plus(f, "layer4", upsample=False, batch_size=4)
    reference = "torchcam SmoothGradCAMpp (4 passes of 4)"
    rows = compare({
        reference: lambda: torchcam_smooth(net, x, targets),
        "fattr smooth_gradcam_plus_plus (batch_size=None)":
            lambda: whole(params, x, targets, generator=generator()),
        "fattr smooth_gradcam_plus_plus (batch_size=4)":
            lambda: chunks(params, x, targets, generator=generator()),
    }, reference=reference, rounds=7, warmup=1)
    print(markdown(rows, "Smooth Grad-CAM++, resnet18 layer4, 4 images 112x112, 4 samples "
                         "(ratios vs torchcam)"), "\n")

    x = torch.randn(2, 3, 32, 32, generator=generator())
    targets, samples = [0, 1], 4
    sscam64 = fattr.sscam(f, "layer3", samples=samples, upsample=False, batch_size=64)
    sscam32 = fattr.sscam(f, "layer3", samples=samples, upsample=False, batch_size=32)
    reference = "torchcam SSCAM (batch_size=32)"
    rows = compare({
        reference: lambda: torchcam_sscam(net, x, targets, samples),
        "fattr sscam (batch_size=64)": lambda: sscam64(params, x, targets, generator=generator()),
        "fattr sscam (batch_size=32)": lambda: sscam32(params, x, targets, generator=generator()),
    }, reference=reference, rounds=3, warmup=1)
    print(markdown(rows, f"SS-CAM, resnet18 layer3, 2 images 32x32, {samples} samples, "
                         f"{samples * 2 * 256} masked inputs (ratios vs torchcam)"))


if __name__ == "__main__":
    main()
