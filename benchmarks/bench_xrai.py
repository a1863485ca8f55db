"""XRAI against PAIR's saliency 0.2.1, in one process, on the same images and attributions.

Four of scikit-image's bundled photographs (astronaut, coffee, chelsea, rocket) resized to
224x224, PAIR's native segmentation size; the attribution is fattr's IG (16 steps) of a
random-weight torchvision resnet18, computed once and given to both libraries (PAIR's
`base_attribution=`), so only XRAI itself is timed. PAIR runs one image at a time (its API);
fattr takes the batch of four.

1. Region selection only: both get PAIR's own segment masks (`segments=`).
2. Segmentation and selection (PAIR's defaults: six Felzenszwalb scales, dilation 5).

Times from `benchmarks.harness.compare` (interleaved rounds, median); peak memory is the
resident memory one call adds. One intra-op thread for torch (numpy and scikit-image run on
one core anyway).

    .venv/bin/python benchmarks/bench_xrai.py
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import saliency.core as pair
import torch
import torchvision
from saliency.core import xrai as pair_xrai
from skimage import data
from skimage.transform import resize

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import fattr
from benchmarks.harness import compare, markdown

SIZE = 224
torch.set_num_threads(1)


def photographs() -> torch.Tensor:
    """Four bundled photographs as a (4, 3, 224, 224) float32 batch in [0, 1]."""
    names = ("astronaut", "coffee", "chelsea", "rocket")
    images = [resize(getattr(data, n)(), (SIZE, SIZE), anti_aliasing=True) for n in names]
    return torch.tensor(np.stack(images), dtype=torch.float32).permute(0, 3, 1, 2).contiguous()


def main() -> None:
    torch.manual_seed(0)
    net = torchvision.models.resnet18(num_classes=10).eval()
    f, params = fattr.functional(net)
    x = photographs()
    attribution = fattr.integrated_gradients(f, steps=16, batch_size=16)(params, x, 3)
    given = lambda params, x, target=None: attribution
    images = x.permute(0, 2, 3, 1).double().numpy()
    attrs = attribution.permute(0, 2, 3, 1).double().numpy()
    masks = [pair_xrai._get_segments_felzenszwalb(image) for image in images]
    stacked = torch.zeros(len(masks), max(map(len, masks)), SIZE, SIZE, dtype=torch.bool)
    for b, per_image in enumerate(masks):
        stacked[b, :len(per_image)] = torch.tensor(np.stack(per_image))
    ours = fattr.xrai(given)

    def pair_xrai_loop(segments):
        return [pair.XRAI().GetMask(images[b], None, base_attribution=attrs[b],
                                    segments=None if segments is None else segments[b])
                for b in range(len(images))]

    theirs = np.stack(pair_xrai_loop(masks))
    mine = ours(params, x.double(), segments=stacked)[:, 0].numpy()
    print(f"max |fattr - PAIR| on PAIR's segments: {np.abs(mine - theirs).max():.2e}; regions "
          f"per image: {[len(m) for m in masks]}\n")

    selection = compare({
        "PAIR XRAI.GetMask, one image at a time": lambda: pair_xrai_loop(masks),
        "fattr xrai, batch of 4": lambda: ours(params, x, segments=stacked),
    }, reference="PAIR XRAI.GetMask, one image at a time", rounds=5, warmup=1)
    print(markdown(selection, "Region selection on PAIR's segments, 4 images 224x224 "
                              "(ratios vs PAIR)"), "\n")
    full = compare({
        "PAIR XRAI.GetMask, one image at a time": lambda: pair_xrai_loop(None),
        "fattr xrai, batch of 4": lambda: ours(params, x),
        "fattr xrai_segments only": lambda: fattr.xrai_segments(x),
    }, reference="PAIR XRAI.GetMask, one image at a time", rounds=3, warmup=1)
    print(markdown(full, "Segmentation and selection, 4 images 224x224 (ratios vs PAIR)"))


if __name__ == "__main__":
    main()
