"""Gradient family against captum and against the physical limit, in one process.

IG on torchvision resnet18 (random weights) at 64x64, batch 4, 32 steps: fattr vs captum's
IntegratedGradients on the same inputs, and vs a raw batched forward + backward (to the input
only) of the same 128 path points, which is the least any implementation can do.

    .venv/bin/python benchmarks/bench_gradient.py
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


def main() -> str:
    torch.manual_seed(0)
    net = torchvision.models.resnet18().eval()
    f, params = fattr.functional(net)
    x = torch.randn(4, 3, 64, 64)
    target = torch.tensor([1, 2, 3, 4])
    steps = 32

    alphas, _ = fattr.core.quadrature.quadrature("gausslegendre", steps, x)
    points = (alphas.view(-1, 1, 1, 1, 1) * x).reshape(-1, 3, 64, 64)
    row_target = target.repeat(steps)[:, None]

    def raw_forward_backward():
        inputs = points.clone().requires_grad_()
        return torch.autograd.grad(net(inputs).gather(1, row_target).sum(), inputs)[0]

    ig = fattr.integrated_gradients(f, steps=steps)
    captum_ig = ca.IntegratedGradients(net)
    tables = [markdown(compare({
        "raw forward+backward (128 points)": raw_forward_backward,
        "fattr integrated_gradients": lambda: ig(params, x, target),
        "captum IntegratedGradients": lambda: captum_ig.attribute(x, target=target,
                                                                  n_steps=steps),
    }, reference="raw forward+backward (128 points)", rounds=9),
        "IG, resnet18 64x64, batch 4, 32 steps (ratios vs the raw forward+backward)")]

    sal = fattr.saliency(f)
    sg = fattr.smoothgrad(fattr.saliency(f, abs=False), samples=16, stdev=0.15)
    span = (x.flatten(1).amax(1) - x.flatten(1).amin(1)).max().item()
    noise_tunnel = ca.NoiseTunnel(ca.Saliency(net))
    shap = fattr.gradient_shap(f, samples=16, stdev=0.1)
    captum_shap = ca.GradientShap(net)
    baselines = torch.zeros(2, 3, 64, 64)
    tables.append(markdown(compare({
        "captum Saliency": lambda: ca.Saliency(net).attribute(x, target=target, abs=True),
        "fattr saliency": lambda: sal(params, x, target),
        "captum NoiseTunnel(Saliency), 16 samples": lambda: noise_tunnel.attribute(
            x, nt_type="smoothgrad", nt_samples=16, stdevs=0.15 * span, target=target,
            abs=False),
        "fattr smoothgrad(saliency), 16 samples": lambda: sg(params, x, target),
        "captum GradientShap, 16 samples": lambda: captum_shap.attribute(
            x, baselines, target=target, n_samples=16, stdevs=0.1),
        "fattr gradient_shap, 16 samples": lambda: shap(params, x, target, baselines=baselines),
    }, reference="captum Saliency", rounds=5),
        "Saliency, SmoothGrad, GradientSHAP on resnet18 64x64, batch 4 (ratios vs captum "
        "Saliency)"))
    return "\n\n".join(tables)


if __name__ == "__main__":
    print(main())
