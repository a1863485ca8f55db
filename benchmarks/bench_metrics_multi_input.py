"""Metrics on a model with two inputs and a per-example forward argument, against captum.

A small CNN on an image (B, 3, 32, 32) plus an MLP on a table (B, 32), scaled by a per-example
tensor passed as an extra forward argument (captum's `additional_forward_args`, fattr's
`model_args`); batch 8, target per example, 10 perturbations of BOTH inputs, the SAME
perturbations for both libraries, in one process. One thread (see bench_metrics.py).

    .venv/bin/python benchmarks/bench_metrics_multi_input.py
"""

from __future__ import annotations

import sys
from pathlib import Path

import captum.attr as ca
import captum.metrics as cm
import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import fattr
from benchmarks.harness import compare, markdown


class ImageAndTable(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.image = nn.Sequential(nn.Conv2d(3, 16, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
                                   nn.Conv2d(16, 32, 3, padding=1), nn.ReLU(),
                                   nn.AdaptiveAvgPool2d(4), nn.Flatten(), nn.Linear(512, 64))
        self.table = nn.Sequential(nn.Linear(32, 64), nn.Tanh())
        self.head = nn.Linear(64, 10)

    def forward(self, image, table, scale):
        return self.head(torch.relu(self.image(image) + scale * self.table(table)))


def main() -> str:
    torch.set_num_threads(1)
    torch.manual_seed(0)
    net = ImageAndTable().eval()
    f, params = fattr.functional(net)
    batch, samples = 8, 10
    x = (torch.randn(batch, 3, 32, 32), torch.randn(batch, 32))
    scale = torch.rand(batch, 1) + 0.5
    target = torch.arange(batch) % 10
    moves = tuple(0.05 * torch.randn(samples, *t.shape) for t in x)
    rows = tuple(m.transpose(0, 1).reshape(-1, *m.shape[2:]) for m in moves)  # captum's order
    sal = fattr.saliency(f)
    a = sal(params, x, target, model_args=(scale,))
    captum_saliency = ca.Saliency(net).attribute

    def captum_infidelity():
        return cm.infidelity(net, lambda given: (rows, tuple(t - r for t, r in zip(given, rows))),
                             x, a, additional_forward_args=(scale,), target=target,
                             n_perturb_samples=samples)

    def captum_sensitivity():
        return cm.sensitivity_max(captum_saliency, x,
                                  lambda given: tuple(t + r for t, r in zip(given, rows)),
                                  n_perturb_samples=samples, target=target,
                                  additional_forward_args=(scale,))

    fattr_infidelity = lambda: fattr.metrics.infidelity(f, params, x, a, target, moves,
                                                        model_args=(scale,))
    fattr_sensitivity = lambda: fattr.metrics.sensitivity_max(sal, params, x, target, moves,
                                                              model_args=(scale,))
    stacked = tuple(torch.cat([t[None], t - m]).flatten(0, 1) for t, m in zip(x, moves))

    def raw_forward():  # the (S + 1) * B rows infidelity evaluates, in one no_grad forward
        with torch.no_grad():
            return net(*stacked, scale.repeat(samples + 1, 1))

    gaps = [((ours() - theirs()).abs() / theirs().abs().clamp(min=1e-12)).max().item()
            for ours, theirs in ((fattr_infidelity, captum_infidelity),
                                 (fattr_sensitivity, captum_sensitivity))]
    table = compare({"captum infidelity": captum_infidelity, "fattr infidelity": fattr_infidelity,
                     "captum sensitivity_max": captum_sensitivity,
                     "fattr sensitivity_max": fattr_sensitivity,
                     "raw forward of the 88 rows": raw_forward},
                    reference="captum infidelity", rounds=7)
    return markdown(table, f"two inputs + per-example model_args, batch 8, 10 perturbations "
                           f"(float32; largest relative difference from captum: infidelity "
                           f"{gaps[0]:.1e}, sensitivity_max {gaps[1]:.1e})")


if __name__ == "__main__":
    print(main())
