"""A real architecture: torchvision resnet18 (random weights, randomized BatchNorm), 32 px."""

from __future__ import annotations

import captum.attr as ca
import pytest
import torch

import fattr
from tests.conftest import resnet18
from tests.perturbation.models import rel_err, seeded

QUADRANTS = torch.tensor([[0, 1], [2, 3]]).repeat_interleave(16, 0).repeat_interleave(16, 1)


@pytest.fixture(scope="module")
def case():
    net = resnet18().double()
    x = torch.randn(2, 3, 32, 32, dtype=torch.float64, generator=seeded(0))
    return net, x, torch.tensor([1, 7])


def test_resnet18_occlusion_and_ablation_match_captum(case):
    net, x, target = case
    f, params = fattr.functional(net)
    ours = fattr.occlusion(f, (3, 16, 16), (3, 12, 12), batch_size=8)(params, x, target)
    theirs = ca.Occlusion(net).attribute(x, sliding_window_shapes=(3, 16, 16),
                                         strides=(3, 12, 12), target=target)
    assert rel_err(ours, theirs.double()) <= 1e-6
    ours = fattr.feature_ablation(f)(params, x, target, baseline=0.5, feature_mask=QUADRANTS)
    theirs = ca.FeatureAblation(net).attribute(x, target=target, baselines=0.5,
                                               feature_mask=QUADRANTS[None, None])
    assert rel_err(ours, theirs) <= 1e-10


def test_resnet18_shapley_efficiency(case):
    net, x, target = case
    f, params = fattr.functional(net)
    a = fattr.shapley_values(f, batch_size=12)(params, x, target, feature_mask=QUADRANTS)
    per_feature = a[:, 0, ::16, ::16].flatten(1)  # one element of each quadrant
    with torch.no_grad():
        out, base = net(x), net(torch.zeros_like(x))
    gap = out[[0, 1], target] - base[[0, 1], target]
    torch.testing.assert_close(per_feature.sum(1), gap, rtol=1e-10, atol=1e-10)
