"""Guided IG's closed-form inner loop against PAIR where the selections are hard: tied
gradients (ReLU and max pooling give many exact zeros), features equal to the baseline,
several full selections per step, and the last selection running out of features."""

from __future__ import annotations

import numpy as np
import pytest
import saliency.core as pair
import torch
from torch import nn

import fattr
from tests.gradient.test_pair_parity import _pair_on_numpy2, pair_gradients  # noqa: F401


def tied_cnn() -> nn.Module:
    """Max pooling on the input: three of every four input gradients are exactly zero."""
    torch.manual_seed(1)
    return nn.Sequential(nn.MaxPool2d(2), nn.Conv2d(2, 3, 3, padding=1), nn.ReLU(),
                         nn.Flatten(), nn.Linear(3 * 3 * 3, 4)).double().eval()


@pytest.mark.parametrize("fraction, max_dist, steps", [
    (0.25, 0.02, 25), (0.1, 0.2, 12), (0.5, 1.0, 8), (0.05, 0.5, 10), (0.9, 0.3, 6)])
def test_guided_ig_matches_pair_with_ties(fraction, max_dist, steps):
    net = tied_cnn()
    f, params = fattr.functional(net)
    x = torch.randn(3, 2, 6, 6, dtype=torch.float64)
    x[0, :, :2] = 0.0  # features equal to the baseline never move
    x[1] = x[1].round()  # many equal |x - x0|
    g = torch.func.grad(lambda v: net(v)[:, 2].sum())(x)
    assert (g == 0).double().mean() > 0.5  # the selections cut through ties
    ours = fattr.guided_integrated_gradients(f, steps=steps, fraction=fraction,
                                             max_dist=max_dist)(params, x, 2)
    for b in range(3):
        theirs = pair.GuidedIG().GetMask(x[b].numpy(), pair_gradients(net, 2),
                                         x_baseline=np.zeros((2, 6, 6)), x_steps=steps,
                                         fraction=fraction, max_dist=max_dist)
        np.testing.assert_allclose(ours[b].numpy(), theirs, rtol=1e-9, atol=1e-12)

