"""Conservation: without biases, the rules pass the target logit down to the input intact."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

import fattr
from fattr.lrp import AlphaBeta, Epsilon, Flat, Norm, ZPlus, first
from tests.lrp.models import Residual, conv_net, relu_mlp


@settings(max_examples=15, deadline=None)
@given(seed=st.integers(0, 10_000), widths=st.lists(st.integers(2, 9), min_size=2, max_size=4),
       target=st.integers(0, 2))
def test_lrp0_conserves_on_bias_free_relu_networks(seed, widths, target):
    net = relu_mlp(seed, bias=False, widths=(5, *widths, 3))
    f, params = fattr.functional(net)
    x = torch.randn(4, 5, dtype=torch.float64, generator=torch.Generator().manual_seed(seed))
    relevance = fattr.lrp(f, "epsilon", epsilon=0.0)(params, x, target)
    torch.testing.assert_close(relevance.sum(1), net(x)[:, target].detach(), rtol=1e-9,
                               atol=1e-12)


EXACT = {  # stabilizers 0: every rule conserves relevance exactly on bias-free ReLU networks
    "lrp0": {(nn.Linear, nn.Conv2d): Epsilon(0.0), nn.AvgPool2d: Norm(0.0)},
    "zplus": {nn.Conv2d: ZPlus(0.0), nn.Linear: Epsilon(0.0), nn.AvgPool2d: Norm(0.0)},
    "alpha_beta": {nn.Conv2d: AlphaBeta(2.0, 1.0, 0.0), nn.Linear: Epsilon(0.0),
                   nn.AvgPool2d: Norm(0.0)},
    "flat_first": {first(nn.Conv2d): Flat(0.0), nn.Conv2d: ZPlus(0.0), nn.Linear: Epsilon(0.0),
                   nn.AvgPool2d: Norm(0.0)},
}


@pytest.mark.parametrize("composite", list(EXACT))
def test_rules_conserve_through_max_and_average_pooling(composite):
    net = conv_net(bias=False, batchnorm=False)
    f, params = fattr.functional(net)
    x = torch.randn(3, 2, 8, 8, dtype=torch.float64)
    relevance = fattr.lrp(f, EXACT[composite])(params, x, 2)
    torch.testing.assert_close(relevance.sum((1, 2, 3)), net(x)[:, 2].detach(), rtol=1e-9,
                               atol=1e-12)


def test_conservation_through_functional_relu_residual_add_and_mean():
    net = Residual().double().eval()
    f, params = fattr.functional(net)
    x = torch.randn(3, 2, 6, 6, dtype=torch.float64)
    composite = {(nn.Linear, nn.Conv2d): Epsilon(0.0), fattr.lrp.Sum: Norm(0.0),
                 nn.AdaptiveAvgPool2d: Norm(0.0)}
    relevance = fattr.lrp(f, composite)(params, x, 1)
    torch.testing.assert_close(relevance.sum((1, 2, 3)), net(x)[:, 1].detach(), rtol=1e-9,
                               atol=1e-12)


class Scaled(nn.Module):
    """A bias-free ReLU MLP with scalings by constants in its forward (a temperature...)."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.a, self.b = nn.Linear(5, 8, bias=False), nn.Linear(8, 3, bias=False)
        self.register_buffer("temperature", torch.tensor(2.5))

    def forward(self, x):
        h = torch.relu(self.a(x * 0.5)) * -3.0
        h = h.div_(4)
        return self.b(h) / self.temperature


def test_scaling_by_constants_keeps_relevance():
    net = Scaled().double().eval()
    f, params = fattr.functional(net)
    x = torch.randn(4, 5, dtype=torch.float64)
    relevance = fattr.lrp(f, "epsilon", epsilon=0.0)(params, x, 2)
    torch.testing.assert_close(relevance.sum(1), net(x)[:, 2].detach(), rtol=1e-9, atol=1e-12)
    # the temperature still gets its true derivative under an outer grad
    d = torch.func.grad(lambda t: fattr.lrp(f, "epsilon", epsilon=0.0)(
        {**params, "temperature": t}, x, 2).sum())(params["temperature"])
    torch.testing.assert_close(d, -(net(x)[:, 2].detach().sum()) / params["temperature"])


def test_biases_absorb_relevance():
    net = conv_net()
    f, params = fattr.functional(net)
    x = torch.randn(3, 2, 8, 8, dtype=torch.float64)
    logits = net(x)[:, 0].detach()
    relevance = fattr.lrp(f, "epsilon", epsilon=0.0)(params, x, 0)
    # biases and the folded BatchNorm shift take their share, so the sums differ from the logit
    assert (relevance.sum((1, 2, 3)) - logits).abs().min() > 1e-4
