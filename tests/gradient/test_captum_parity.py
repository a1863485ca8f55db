"""Parity with captum on the same models and inputs, float64, max relative error <= 1e-6."""

from __future__ import annotations

import captum.attr as ca
import pytest
import torch

import fattr
from tests.conftest import mlp, resnet18, small_cnn

RULES = ["gausslegendre", "riemann_left", "riemann_right", "riemann_middle", "riemann_trapezoid"]


def rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a - b).abs().max() / b.abs().max()).item()


@pytest.fixture(params=["mlp", "cnn"])
def case(request):
    if request.param == "mlp":
        net = mlp()
        x = torch.randn(6, 5, dtype=torch.float64)
        target = torch.tensor([0, 1, 2, 0, 1, 2])
    else:
        net = small_cnn()
        x = torch.randn(3, 1, 8, 8, dtype=torch.float64)
        target = torch.tensor([3, 0, 1])
    return net, x, target


@pytest.mark.parametrize("absolute", [True, False])
def test_saliency(case, absolute):
    net, x, target = case
    f, params = fattr.functional(net)
    ours = fattr.saliency(f, abs=absolute)(params, x, target)
    theirs = ca.Saliency(net).attribute(x, target=target, abs=absolute)
    assert rel_err(ours, theirs) <= 1e-12


def test_input_x_gradient(case):
    net, x, target = case
    f, params = fattr.functional(net)
    ours = fattr.input_x_gradient(f)(params, x, target)
    theirs = ca.InputXGradient(net).attribute(x, target=target)
    assert rel_err(ours, theirs) <= 1e-12


@pytest.mark.parametrize("rule", RULES)
def test_integrated_gradients_every_rule(case, rule):
    net, x, target = case
    f, params = fattr.functional(net)
    baseline = 0.1 * torch.randn_like(x)
    ig = fattr.integrated_gradients(f, steps=20, method=rule)
    ours = ig(params, x, target, baseline=baseline)
    theirs = ca.IntegratedGradients(net).attribute(x, baseline, target=target, n_steps=20,
                                                   method=rule)
    if rule == "riemann_trapezoid":  # captum's trapezoid weights sum to (n-1)/n
        theirs = theirs * 20 / 19
    assert rel_err(ours, theirs) <= 1e-6  # captum rounds its quadrature weights to float32


def test_integrated_gradients_reference_values():
    """REFERENCES.md: Linear(3,4) W=1, b=[-10,1,1,1], ReLU, target 0, x=[3,4,5]."""
    net = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.ReLU())
    with torch.no_grad():
        net[0].weight.fill_(1.0)
        net[0].bias.copy_(torch.tensor([-10.0, 1, 1, 1]))
    f, params = fattr.functional(net)
    ours = fattr.integrated_gradients(f)(params, torch.tensor([[3.0, 4, 5]]), 0)
    torch.testing.assert_close(ours, torch.tensor([[0.4813, 0.6417, 0.8021]]), atol=1e-4, rtol=0)


def test_convergence_delta_equals_completeness_gap(case):
    net, x, target = case
    f, params = fattr.functional(net)
    baseline = torch.randn_like(x)
    ours = fattr.integrated_gradients(f, steps=7)(params, x, target, baseline=baseline)
    _, delta = ca.IntegratedGradients(net).attribute(
        x, baseline, target=target, n_steps=7, return_convergence_delta=True)
    gap = fattr.completeness_gap(f, params, x, ours, target, baseline)
    torch.testing.assert_close(gap, delta, atol=1e-6, rtol=1e-4)


def test_integrated_gradients_resnet18():
    net = resnet18().double()
    f, params = fattr.functional(net)
    x = torch.randn(2, 3, 32, 32, dtype=torch.float64)
    target = torch.tensor([1, 7])
    ours = fattr.integrated_gradients(f, steps=8, batch_size=5)(params, x, target)
    theirs = ca.IntegratedGradients(net).attribute(x, target=target, n_steps=8)
    assert rel_err(ours, theirs) <= 1e-6


def test_gradient_shap_converges_to_ig():
    """stdev 0 and one baseline: GradientSHAP is a Monte Carlo estimate of IG."""
    net = mlp(act=torch.nn.Tanh)
    f, params = fattr.functional(net)
    x = torch.randn(3, 5, dtype=torch.float64)
    baseline = torch.randn(1, 5, dtype=torch.float64)
    shap = fattr.gradient_shap(f, samples=4000)(params, x, 1, baselines=baseline,
                                                generator=torch.Generator().manual_seed(0))
    ig = fattr.integrated_gradients(f, steps=64)(params, x, 1, baseline=baseline)
    assert rel_err(shap, ig) < 0.03


def test_gradient_shap_matches_captum_in_expectation():
    net = mlp(act=torch.nn.Tanh)
    f, params = fattr.functional(net)
    x = torch.randn(2, 5, dtype=torch.float64)
    baselines = torch.randn(4, 5, dtype=torch.float64)
    ours = fattr.gradient_shap(f, samples=3000, stdev=0.1)(
        params, x, 2, baselines=baselines, generator=torch.Generator().manual_seed(1))
    torch.manual_seed(1)
    theirs = ca.GradientShap(net).attribute(x, baselines, target=2, n_samples=3000, stdevs=0.1)
    assert rel_err(ours, theirs) < 0.05
    # both are complete in expectation over the baselines
    expected = net(x)[:, 2] - net(baselines)[:, 2].mean()
    tolerance = 0.05 * expected.abs().max().item()
    torch.testing.assert_close(ours.sum(1), expected, atol=tolerance, rtol=0)
