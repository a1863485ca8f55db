"""Axioms of path methods: completeness, linearity, dummy features, implementation invariance."""

from __future__ import annotations

import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

import fattr
from tests.conftest import mlp

floats = st.floats(-3, 3, allow_nan=False, width=64)


@given(st.lists(floats, min_size=4, max_size=4), st.lists(floats, min_size=4, max_size=4),
       st.sampled_from(["gausslegendre", "riemann_middle", "riemann_trapezoid"]))
@settings(max_examples=30, deadline=None)
def test_linear_model_ig_is_exact(weights, point, rule):
    w = torch.tensor(weights, dtype=torch.float64)
    x = torch.tensor([point], dtype=torch.float64)
    f = lambda p, x: x @ p["w"] + 1.5
    ig = fattr.integrated_gradients(f, steps=3, method=rule)({"w": w}, x, None, baseline=0.5)
    torch.testing.assert_close(ig, w * (x - 0.5), rtol=1e-12, atol=1e-12)


@given(st.integers(0, 2**16))
@settings(max_examples=10, deadline=None)
def test_ig_completeness_on_smooth_networks(seed):
    f, params = fattr.functional(mlp(seed % 7, act=nn.Tanh))
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(3, 5, generator=g, dtype=torch.float64)
    baseline = torch.randn(3, 5, generator=g, dtype=torch.float64)
    ig = fattr.integrated_gradients(f, steps=40)(params, x, 2, baseline=baseline)
    gap = fattr.completeness_gap(f, params, x, ig, 2, baseline)
    assert gap.abs().max() < 1e-8  # Gauss-Legendre with 40 nodes on an analytic path


def test_dummy_feature_gets_zero_everywhere():
    net = mlp()
    with torch.no_grad():
        net[0].weight[:, 3] = 0.0  # feature 3 cannot influence the output
    f, params = fattr.functional(net)
    x = torch.randn(4, 5, dtype=torch.float64)
    for attr in [fattr.integrated_gradients(f, steps=8), fattr.saliency(f),
                 fattr.input_x_gradient(f), fattr.gradient_shap(f, samples=3, stdev=0.1)]:
        assert attr(params, x, 1)[:, 3].abs().max() == 0


def test_implementation_invariance():
    """Two networks computing the same function get the same IG."""
    net = mlp(act=nn.Tanh)
    scaled = mlp(act=nn.Tanh)
    scaled.load_state_dict(net.state_dict())
    with torch.no_grad():  # a different parametrization of the same function
        scaled[4].weight.mul_(2.0)
        scaled[4].bias.mul_(2.0)
    f, p = fattr.functional(net)
    g, q = fattr.functional(scaled)
    half = lambda params, x: g(params, x) / 2
    x = torch.randn(3, 5, dtype=torch.float64)
    torch.testing.assert_close(fattr.integrated_gradients(f, steps=16)(p, x, 0),
                               fattr.integrated_gradients(half, steps=16)(q, x, 0))


def test_smoothgrad_with_zero_noise_is_the_wrapped_method():
    f, params = fattr.functional(mlp())
    x = torch.randn(3, 5, dtype=torch.float64)
    sal = fattr.saliency(f, abs=False)
    sg = fattr.smoothgrad(sal, samples=3, stdev=0.0)(params, x, 1)
    torch.testing.assert_close(sg, sal(params, x, 1))
    # the mean of three equal float64 gradients may differ from each in the last bit
    assert fattr.vargrad(sal, samples=3, stdev=0.0)(params, x, 1).abs().max() < 1e-24
