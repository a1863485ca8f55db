"""Integrated gradients with `batch_size` holds memory flat in `steps`: each chunk builds its
own path points (`fattr.core.chunking.path_sum`). Measured as the peak of live tensor bytes
(deterministic, unlike the resident size), against the size of the whole path.

(GradientSHAP is not flat: it draws all its noise up front, samples x B inputs, so that the
result does not depend on `batch_size`.)"""

from __future__ import annotations

import pytest
import torch
from torch import nn

import fattr
from benchmarks.harness import peak_live_bytes


@pytest.mark.parametrize("complete", [False, True])
def test_ig_memory_is_flat_in_steps(complete):
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1),
                        nn.Flatten(), nn.Linear(8, 4)).eval()
    f, params = fattr.functional(net)
    x = torch.randn(4, 3, 24, 24)
    make = lambda n: fattr.integrated_gradients(f, n, batch_size=16, complete=complete)
    peaks = {}
    for steps in (8, 160):
        attr = make(steps)
        peaks[steps] = peak_live_bytes(lambda attr=attr: attr(params, x, 1))
    path = 160 * x.numel() * x.element_size()  # every path point at once
    assert peaks[8] > 0
    assert peaks[160] - peaks[8] < 0.05 * path  # the goal: under 5% of the path
    assert peaks[160] < 0.5 * path
