"""LRP against zennit in one process, on the same inputs.

torchvision resnet18 and vgg11_bn (random weights, randomized BatchNorm statistics, float32),
batch 2 at 224x224 (resnet18) and batch 4 at 64x64 (vgg11_bn), target logit as initial
relevance. Each zennit composite runs with its torchvision canonizer (ResNetCanonizer,
VGGCanonizer) and its `Gradient` attributor; fattr runs `fattr.lrp(f, composite)`. A plain
forward + backward to the input gives the cost of one gradient for scale.

Everything runs on ONE thread: the 2-core machine is shared with other jobs (interleaved rounds
spread their load over every function alike), and the harness's forked memory child hangs in
its first kernel when the parent has used a multi-threaded pool.

    .venv/bin/python benchmarks/bench_lrp.py
"""

from __future__ import annotations

import sys
import warnings
from pathlib import Path

import torch
import torchvision
from zennit.attribution import Gradient
from zennit.composites import EpsilonAlpha2Beta1, EpsilonGammaBox, EpsilonPlusFlat
from zennit.torchvision import ResNetCanonizer, VGGCanonizer

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import fattr
from benchmarks.harness import compare, markdown
from tests.conftest import randomize_batchnorm

COMPOSITES = {
    "epsilon_plus_flat": ({}, lambda c: EpsilonPlusFlat(canonizers=[c()])),
    "epsilon_gamma_box": ({"low": -2.5, "high": 2.5},
                          lambda c: EpsilonGammaBox(low=-2.5, high=2.5, canonizers=[c()])),
    "epsilon_alpha2_beta1": ({}, lambda c: EpsilonAlpha2Beta1(canonizers=[c()])),
}


def _model(name: str) -> torch.nn.Module:
    torch.manual_seed(0)
    net = getattr(torchvision.models, name)()
    randomize_batchnorm(net)
    return net.eval()


def table(name: str, canonizer: type, batch: int, size: int, rounds: int) -> str:
    net = _model(name)
    f, params = fattr.functional(net)
    x = torch.randn(batch, 3, size, size)
    target = torch.arange(batch) % 10
    one_hot = torch.nn.functional.one_hot(target, 1000).float()

    def gradient():
        v = x.clone().requires_grad_()
        return torch.autograd.grad(net(v).gather(1, target[:, None]).sum(), v)[0]

    rows = []
    for composite, (kwargs, zennit_composite) in COMPOSITES.items():
        attr = fattr.lrp(f, composite, **kwargs)

        def zennit(zennit_composite=zennit_composite):
            with Gradient(net, zennit_composite(canonizer)) as attributor:
                return attributor(x, lambda out: one_hot * out)[1]

        fns = {f"fattr {composite}": lambda attr=attr: attr(params, x, target),
               f"zennit {composite}": zennit, "plain gradient": gradient}
        for row in compare(fns, reference=f"zennit {composite}", rounds=rounds, warmup=1):
            if row["name"] != "plain gradient" or composite == "epsilon_plus_flat":
                rows.append(row)
    return markdown(rows, f"{name}, batch {batch}, {size}x{size}: time and peak memory "
                          "relative to zennit (same composite)")


def main() -> str:
    warnings.filterwarnings("ignore")
    torch.set_num_threads(1)
    return "\n\n".join([table("resnet18", ResNetCanonizer, 2, 224, rounds=5),
                        table("vgg11_bn", VGGCanonizer, 4, 64, rounds=5)])


if __name__ == "__main__":
    print(main())
