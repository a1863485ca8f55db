"""Attributions inside training losses: d(loss of attribution)/d(params), second order.

For each method, the right-for-the-right-reasons penalty `sum(mask * A_w(x)^2)` (A the map of
the model with parameters w, as in examples/decoy_digits.py) is differentiated in the
parameters by `torch.func.grad`, in float64, and checked along a random direction against
central differences (`conftest.directional_derivative`). The gradient is not identically zero:
every weight tensor gets a non-zero gradient. That such a loss trains a better model:
tests/test_decoy.py.
"""

from __future__ import annotations

import pytest
import torch

import fattr
from tests.conftest import directional_derivative, small_cnn

LAYER = "4"  # small_cnn's second convolution (B, 6, 4, 4)
METHODS = {
    "saliency": lambda f: fattr.saliency(f, abs=False),
    "integrated_gradients": lambda f: fattr.integrated_gradients(f, steps=6),
    "guided_backprop": fattr.guided_backprop,
    "guided_backprop_hook": lambda f: fattr.guided_backprop(f, mode="hook"),
    "deeplift": fattr.deeplift,
    "lrp_epsilon_plus_flat": fattr.lrp,
    "lrp_epsilon": lambda f: fattr.lrp(f, "epsilon"),
    "gradcam": lambda f: fattr.gradcam(f, LAYER),
    "gradcam_no_relu": lambda f: fattr.gradcam(f, LAYER, relu=False),
}


@pytest.fixture
def case():
    net = small_cnn()
    f, params = fattr.functional(net)
    x = torch.rand(3, 1, 8, 8, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    y = torch.tensor([0, 3, 1])
    weights = fattr.trainable(f, params)  # conv, BatchNorm and linear weights and biases
    return f, params, weights, x, y


def penalty(attr, params, x, y):
    """`w -> sum over the upper-left 4x4 of attr(w)^2` (a CAM is upsampled to the input)."""
    mask = torch.zeros(8, 8, dtype=torch.float64)
    mask[:4, :4] = 1.0
    return lambda w: (attr({**params, **w}, x, y) * mask).pow(2).sum()


@pytest.mark.parametrize("name", METHODS)
def test_gradient_of_the_penalty_matches_finite_differences(case, name):
    f, params, weights, x, y = case
    d = directional_derivative(penalty(METHODS[name](f), params, x, y), weights)
    torch.testing.assert_close(d.analytic, d.numeric, rtol=1e-6, atol=1e-9)
    assert d.analytic.abs() > 1e-4
    zero = [k for k, g in d.grads.items() if k.endswith("weight") and not g.abs().sum() > 0]
    assert not zero, f"{name}: no gradient reaches {zero}"


def test_eager_autograd_gives_the_same_gradient_as_torch_func(case):
    """Params that require grad and `.backward()`: the attribution carries its graph."""
    f, params, weights, x, y = case
    attr = METHODS["lrp_epsilon"](f)
    term = penalty(attr, params, x, y)
    expected = torch.func.grad(term)(weights)
    tracked = {k: v.clone().requires_grad_() for k, v in weights.items()}
    term(tracked).backward()
    for k, v in tracked.items():
        torch.testing.assert_close(v.grad, expected[k], rtol=1e-10, atol=1e-12)
