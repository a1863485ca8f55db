"""Parity with PAIR's saliency library (Guided IG, Blur IG) and its published unit cases."""

from __future__ import annotations

import numpy as np
import pytest
import saliency.core as pair
import torch
from torch import nn

import fattr
from benchmarks.harness import pair_on_numpy2
from tests.conftest import mlp


@pytest.fixture(autouse=True)
def _pair_on_numpy2():
    """PAIR 0.2.1 calls np.quantile(..., interpolation=), removed in numpy 2: translate it."""
    with pair_on_numpy2():
        yield


def pair_gradients(net: nn.Module, target: int, channels_last: bool = False):
    """PAIR's call_model_function for a float64 torch model (inputs in PAIR's layout)."""

    def call(batch, call_model_args=None, expected_keys=None):
        x = torch.tensor(np.asarray(batch), dtype=torch.float64)
        if channels_last:
            x = x.permute(0, 3, 1, 2)
        x.requires_grad_(True)
        (grad,) = torch.autograd.grad(net(x)[:, target].sum(), x)
        if channels_last:
            grad = grad.permute(0, 2, 3, 1)
        return {pair.INPUT_OUTPUT_GRADIENTS: grad.detach().numpy()}

    return call


def quadratic(params, x):
    return ((2 * x[:, 0] + x[:, 1]) ** 2)[:, None]


def test_guided_ig_pair_unit_cases():
    """PAIR's guided_ig_test: f = (2 x1 + x2)^2 at [3, 3], zero baseline (PAIR uses 1000
    steps; 400 keep the right-Riemann error well inside its rtol of 1e-2)."""
    x = torch.tensor([[3.0, 3.0]], dtype=torch.float64)
    straight = fattr.guided_integrated_gradients(quadratic, steps=400, max_dist=0.0)
    unbounded = fattr.guided_integrated_gradients(quadratic, steps=400, fraction=0.1,
                                                  max_dist=1.0)
    np.testing.assert_allclose(straight({}, x, 0)[0].numpy(), [54, 27], rtol=1e-2)
    np.testing.assert_allclose(unbounded({}, x, 0)[0].numpy(), [72, 9], rtol=1e-2)


@pytest.mark.parametrize("fraction, max_dist", [(0.25, 0.02), (0.1, 0.1), (0.5, 1.0), (1.0, 0.02)])
def test_guided_ig_matches_pair(fraction, max_dist):
    net = mlp(d_in=12, act=nn.Tanh)
    f, params = fattr.functional(net)
    x = torch.randn(3, 12, dtype=torch.float64)
    baseline = 0.1 * torch.randn(3, 12, dtype=torch.float64)
    ours = fattr.guided_integrated_gradients(f, steps=40, fraction=fraction, max_dist=max_dist)(
        params, x, 1, baseline=baseline)
    for b in range(3):
        theirs = pair.GuidedIG().GetMask(x[b].numpy(), pair_gradients(net, 1),
                                         x_baseline=baseline[b].numpy(), x_steps=40,
                                         fraction=fraction, max_dist=max_dist)
        np.testing.assert_allclose(ours[b].numpy(), theirs, rtol=1e-9, atol=1e-12)


def test_guided_ig_with_zero_deviation_is_ig_on_the_right_riemann_rule():
    f, params = fattr.functional(mlp(act=nn.Tanh))
    x = torch.randn(4, 5, dtype=torch.float64)
    gig = fattr.guided_integrated_gradients(f, steps=30, max_dist=0.0)(params, x, 2)
    ig = fattr.integrated_gradients(f, steps=30, method="riemann_left")(params, x, 2)
    torch.testing.assert_close(gig, ig, rtol=1e-9, atol=1e-12)


def test_guided_ig_is_complete_up_to_the_path_discretisation():
    f, params = fattr.functional(mlp(act=nn.Tanh))
    x = torch.randn(4, 5, dtype=torch.float64)
    gig = fattr.guided_integrated_gradients(f, steps=400)(params, x, 0)
    gap = fattr.completeness_gap(f, params, x, gig, 0)
    assert gap.abs().max() < 5e-3


def image_net(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.Tanh(), nn.AdaptiveAvgPool2d(2),
                         nn.Flatten(), nn.Linear(16, 3)).double().eval()


@pytest.mark.parametrize("sqrt", [False, True])
def test_blur_ig_matches_pair(sqrt):
    net = image_net()
    f, params = fattr.functional(net)
    x = torch.randn(2, 3, 12, 14, dtype=torch.float64)
    ours = fattr.blur_integrated_gradients(f, steps=20, max_sigma=6.0, sqrt=sqrt,
                                           batch_size=7)(params, x, 2)
    for b in range(2):
        theirs = pair.BlurIG().GetMask(x[b].permute(1, 2, 0).numpy(),
                                       pair_gradients(net, 2, channels_last=True), steps=20,
                                       max_sigma=6.0, sqrt=sqrt, batch_size=1)
        np.testing.assert_allclose(ours[b].permute(1, 2, 0).numpy(), theirs, rtol=1e-8,
                                   atol=1e-12)


def test_blur_ig_rejects_non_images():
    f, params = fattr.functional(mlp())
    with pytest.raises(fattr.FattrError, match="batch of images \\(B, C, H, W\\), got shape"):
        fattr.blur_integrated_gradients(f)(params, torch.randn(2, 5, dtype=torch.float64), 0)


@pytest.mark.parametrize("make", [
    lambda f: fattr.guided_integrated_gradients(f, steps=6),
    lambda f: fattr.blur_integrated_gradients(f, steps=5, max_sigma=2.0),
])
def test_path_methods_compose_with_vmap(make):
    net = image_net()
    f, params = fattr.functional(net)
    x = torch.randn(3, 3, 6, 6, dtype=torch.float64)
    targets = torch.tensor([[0, 1, 2], [2, 2, 0]])
    mapped = torch.func.vmap(make(f), in_dims=(None, None, 0))(params, x, targets)
    torch.testing.assert_close(mapped[1], make(f)(params, x, targets[1]))
    per_example = torch.func.vmap(make(fattr.per_example(f)), in_dims=(None, 0, 0))
    torch.testing.assert_close(per_example(params, x, targets[0]), mapped[0])
