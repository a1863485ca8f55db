"""Metrics against captum and against a raw forward of the same inputs, in one process.

torchvision resnet18 (random weights) at 64x64, batch 4, target per example:
- infidelity (saliency attribution, 10 perturbations) and sensitivity_max (saliency, 10
  perturbations): fattr vs captum.metrics on the SAME perturbations (the values agree);
- deletion and ROAD with 20 steps: fattr vs one raw batched forward of the same 84 inputs
  (the least any implementation can do; ROAD adds its imputation).

Runs on ONE thread: the harness measures peak memory in a forked child, which hangs in GNU
OpenMP once the parent has run multi-threaded kernels; one thread also keeps the shared 2-core
machine's other jobs from dominating the (interleaved, median) wall times.

    .venv/bin/python benchmarks/bench_metrics.py
"""

from __future__ import annotations

import sys
from pathlib import Path

import captum.attr as ca
import captum.metrics as cm
import torch
import torchvision

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import fattr
from benchmarks.harness import compare, markdown


def main() -> str:
    torch.set_num_threads(1)
    torch.manual_seed(0)
    net = torchvision.models.resnet18().eval()
    f, params = fattr.functional(net)
    x = torch.randn(4, 3, 64, 64)
    target = torch.tensor([1, 2, 3, 4])
    samples = 10
    perturbations = 0.05 * torch.randn(samples, *x.shape)
    rows = perturbations.transpose(0, 1).reshape(-1, *x.shape[1:])  # captum's order
    sal = fattr.saliency(f)
    a = sal(params, x, target)
    captum_saliency = ca.Saliency(net).attribute

    ours = fattr.metrics.infidelity(f, params, x, a, target, perturbations)
    theirs = cm.infidelity(net, lambda inputs: (rows, inputs - rows), x, a, target=target,
                           n_perturb_samples=samples)
    gap = ((ours - theirs).abs() / theirs.abs()).max().item()
    tables = [markdown(compare({
        "captum infidelity": lambda: cm.infidelity(
            net, lambda inputs: (rows, inputs - rows), x, a, target=target,
            n_perturb_samples=samples),
        "fattr infidelity": lambda: fattr.metrics.infidelity(f, params, x, a, target,
                                                             perturbations),
        "captum sensitivity_max": lambda: cm.sensitivity_max(
            captum_saliency, x, lambda inputs: inputs + rows, n_perturb_samples=samples,
            target=target),
        "fattr sensitivity_max": lambda: fattr.metrics.sensitivity_max(
            sal, params, x, target, perturbations),
    }, reference="captum infidelity", rounds=5),
        f"infidelity / sensitivity_max, resnet18 64x64, batch 4, 10 perturbations (ratios vs "
        f"captum infidelity; largest relative difference of the infidelity values {gap:.1e})")]

    steps = 20
    inputs = x.repeat(steps + 1, 1, 1, 1)
    mask = a.sum(1, keepdim=True)

    def raw_forward():
        with torch.no_grad():
            return net(inputs)

    def deletion():
        with torch.no_grad():
            return fattr.metrics.deletion(f, params, x, mask, target, steps=steps)

    def road():
        with torch.no_grad():
            return fattr.metrics.road(f, params, x, mask, target, steps=steps,
                                      generator=torch.Generator().manual_seed(0))

    tables.append(markdown(compare({
        "raw forward (84 inputs)": raw_forward,
        "fattr deletion, 20 steps": deletion,
        "fattr road, 20 steps": road,
    }, reference="raw forward (84 inputs)", rounds=5),
        "deletion / ROAD, resnet18 64x64, batch 4 (ratios vs a raw forward of the same number "
        "of inputs)"))
    return "\n\n".join(tables)


if __name__ == "__main__":
    print(main())
