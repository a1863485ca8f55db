"""layer_deeplift and layer_feature_ablation against captum, in one process on the same inputs.

torchvision resnet18 (random weights, float32), 4 images, one intra-op thread. captum's
DeepLift refuses resnet's reused ReLU modules, so captum runs on the same function with one
ReLU module per use (`tests/rules/captum_reference.dedupe_relus`).

    .venv/bin/python benchmarks/bench_layers.py
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
from tests.rules.captum_reference import dedupe_relus


def layer_deeplift_table(f, params, peer, layer: str, x, base, target) -> str:
    ours = fattr.layer_deeplift(f, layer)
    theirs = ca.LayerDeepLift(peer, dict(peer.named_modules())[layer])
    rows = compare({
        "captum LayerDeepLift": lambda: theirs.attribute(x, base, target=target),
        "fattr layer_deeplift": lambda: ours(params, x, target, baseline=base),
    }, "captum LayerDeepLift", rounds=7)
    return markdown(rows, f"LayerDeepLift, resnet18 {layer}, 4 images "
                          f"{x.shape[-1]}x{x.shape[-1]}")


def main() -> str:
    torch.set_num_threads(1)
    torch.manual_seed(0)
    net = torchvision.models.resnet18(num_classes=10).eval()
    f, params = fattr.functional(net)
    peer = dedupe_relus(net)
    target = torch.tensor([0, 1, 2, 3])
    tables = []
    for size in (32, 64):
        x = torch.randn(4, 3, size, size)
        base = 0.1 * torch.randn_like(x)
        for layer in ("layer2", "layer3"):
            tables.append(layer_deeplift_table(f, params, peer, layer, x, base, target))
    x = torch.randn(4, 3, 32, 32)
    groups = torch.arange(256).reshape(1, 256, 1, 1)  # one group per layer3 channel
    ablation = fattr.layer_feature_ablation(f, "layer3", batch_size=64)
    peer_ablation = ca.LayerFeatureAblation(net, net.layer3)
    rows = compare({
        "captum LayerFeatureAblation (perturbations_per_eval=16)": lambda: peer_ablation.attribute(
            x, target=1, layer_mask=groups, perturbations_per_eval=16),
        "fattr layer_feature_ablation (batch_size=64)": lambda: ablation(
            params, x, 1, layer_mask=groups),
    }, "captum LayerFeatureAblation (perturbations_per_eval=16)", rounds=5)
    tables.append(markdown(rows, "LayerFeatureAblation, resnet18 layer3, 256 channel groups, "
                                 "4 images 32x32 (1024 model inputs)"))
    return "\n\n".join(tables)


if __name__ == "__main__":
    print(main())
