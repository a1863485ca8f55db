"""Metrics of a map on its own or against a mask: sparseness, complexity, pointing game,
relevance mass; and completeness against a model."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.stats import entropy
from torch import nn

import fattr
from tests.conftest import mlp

m = fattr.metrics


def gini_reference(a: np.ndarray) -> float:
    """Quantus' Sparseness formula, without its 1e-7 offset."""
    a = np.sort(np.abs(a.ravel()))
    n = a.size
    return float(np.sum((2 * np.arange(1, n + 1) - n - 1) * a) / (n * np.sum(a)))


def test_sparseness_extremes_and_reference():
    one_hot = torch.zeros(3, 2, 4, 4)
    one_hot[0, 0, 1, 2] = 5.0
    one_hot[1, 1, 3, 3] = -0.1
    one_hot[2] = 1.0  # uniform
    got = m.sparseness(one_hot)
    torch.testing.assert_close(got, torch.tensor([31 / 32, 31 / 32, 0.0]))
    a = torch.randn(5, 3, 7, dtype=torch.float64)
    expected = torch.tensor([gini_reference(a[i].numpy()) for i in range(5)],
                            dtype=torch.float64)
    torch.testing.assert_close(m.sparseness(a), expected)
    assert m.sparseness(torch.zeros(1, 4)).item() == 0.0


@settings(max_examples=30, deadline=None)
@given(st.integers(2, 40), st.floats(0.1, 10.0), st.integers(0, 1000))
def test_sparseness_and_complexity_are_scale_and_order_invariant(n, scale, seed):
    g = torch.Generator().manual_seed(seed)
    a = torch.randn(2, n, generator=g, dtype=torch.float64)
    shuffled = a[:, torch.randperm(n, generator=g)]
    for metric in (m.sparseness, m.complexity):
        torch.testing.assert_close(metric(scale * a), metric(a))
        torch.testing.assert_close(metric(shuffled), metric(a))
    assert bool((m.sparseness(a) <= (n - 1) / n + 1e-12).all())
    assert bool((m.complexity(a) <= np.log(n) + 1e-12).all())


def test_complexity_extremes_and_scipy_entropy():
    a = torch.zeros(2, 1, 4, 4, dtype=torch.float64)
    a[0, 0, 0, 0] = -2.0
    a[1] = 0.5
    torch.testing.assert_close(m.complexity(a), torch.tensor([0.0, np.log(16)],
                                                             dtype=torch.float64))
    b = torch.randn(4, 10, dtype=torch.float64)
    expected = torch.tensor([entropy(np.abs(row)) for row in b.numpy()], dtype=torch.float64)
    torch.testing.assert_close(m.complexity(b), expected)


def test_relevance_mass():
    a = torch.zeros(4, 1, 4, 4)
    mask = torch.zeros(4, 1, 4, 4, dtype=torch.bool)
    mask[:, :, :2, :2] = True
    a[0, 0, 0, 1], a[0, 0, 1, 0] = 3.0, -1.0   # all inside
    a[1, 0, 3, 3] = 2.0                         # all outside
    a[2, 0, 0, 0], a[2, 0, 3, 0] = 1.0, -1.0    # half the magnitude inside
    got = m.relevance_mass(a, mask)
    torch.testing.assert_close(got, torch.tensor([1.0, 0.0, 0.5, 0.0]))
    positive = m.relevance_mass(a, mask, sign="positive")
    torch.testing.assert_close(positive, torch.tensor([1.0, 0.0, 1.0, 0.0]))
    # soft masks weight the mass; (B, 1, H, W) masks broadcast over channels
    soft = m.relevance_mass(torch.ones(1, 3, 2, 2), torch.tensor([[[[1.0, 0.5], [0, 0]]]]))
    torch.testing.assert_close(soft, torch.tensor([0.375]))


def test_pointing_game_and_tolerance():
    a = torch.zeros(3, 1, 6, 6)
    a[0, 0, 1, 1] = 1.0   # inside
    a[1, 0, 4, 4] = 1.0   # far outside
    a[2, 0, 3, 1] = 1.0   # one pixel below the box
    mask = torch.zeros(1, 1, 6, 6, dtype=torch.bool)
    mask[..., :3, :3] = True
    assert m.pointing_game(a, mask).tolist() == [1.0, 0.0, 0.0]
    assert m.pointing_game(a, mask, tolerance=1).tolist() == [1.0, 0.0, 1.0]
    assert m.pointing_game(a.double(), mask).dtype == torch.float64


def test_completeness():
    net = mlp(act=nn.Tanh)
    f, params = fattr.functional(net)
    x = torch.randn(4, 5, dtype=torch.float64)
    ig = fattr.integrated_gradients(f, steps=64)(params, x, 1)
    assert bool((m.completeness(f, params, x, ig, 1) < 1e-6).all())
    a = fattr.saliency(f, abs=False)(params, x, 1)
    out = f(params, x)[:, 1] - f(params, torch.zeros_like(x))[:, 1]
    expected = (a.sum(1) - out).abs() / out.abs()
    torch.testing.assert_close(m.completeness(f, params, x, a, 1), expected)
    one = m.completeness(fattr.per_example(f), params, x[2], a[2], 1)
    torch.testing.assert_close(one, expected[2])


@pytest.mark.parametrize("call, match", [
    (lambda: m.sparseness(torch.ones(4)), "batch axis and at least one feature axis"),
    (lambda: m.complexity(torch.ones(2, 3, dtype=torch.long)), "floating-point"),
    (lambda: m.sparseness(torch.tensor([[1.0, float("nan")]])), "NaN or Inf"),
    (lambda: m.relevance_mass(torch.ones(2, 1, 4, 4), torch.ones(2, 4, 4)),
     "mask of shape \\(2, 4, 4\\) does not match the attribution of shape \\(2, 1, 4, 4\\)"),
    (lambda: m.relevance_mass(torch.ones(2, 1, 4, 4), torch.ones(2, 1, 3, 4)),
     "does not match"),
    (lambda: m.relevance_mass(torch.ones(2, 4), torch.full((2, 4), 2.0)),
     "mask values must lie in \\[0, 1\\]"),
    (lambda: m.relevance_mass(torch.ones(2, 4), torch.ones(2, 4), sign="all"),
     "sign must be 'absolute' or 'positive'"),
    (lambda: m.pointing_game(torch.ones(2, 4), [1, 0]), "mask must be a tensor"),
    (lambda: m.pointing_game(torch.ones(2, 4), torch.ones(2, 4), tolerance=1),
     "two spatial axes"),
    (lambda: m.pointing_game(torch.ones(2, 4), torch.ones(2, 4), tolerance=-1),
     "tolerance must be an int >= 0"),
])
def test_errors(call, match):
    with pytest.raises(ValueError, match=match):
        call()
