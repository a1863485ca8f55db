"""infidelity and sensitivity_max against captum.metrics on the same perturbations (float64)."""

from __future__ import annotations

import pytest
import torch
from captum import attr as captum_attr
from captum import metrics as captum_metrics
from torch import nn

import fattr
from tests.conftest import mlp, small_cnn


def models():
    return {"mlp": (mlp(act=nn.Tanh), (6, 5)), "cnn": (small_cnn(), (3, 1, 8, 8))}


def interleaved(perturbations):
    """fattr's (S, B, ...) as captum's rows: the sample axis innermost (repeat_interleave)."""
    return perturbations.transpose(0, 1).reshape(-1, *perturbations.shape[2:])


@pytest.mark.parametrize("name", ["mlp", "cnn"])
@pytest.mark.parametrize("normalize", [False, True])
@pytest.mark.parametrize("per_example_target", [False, True])
def test_infidelity_matches_captum(name, normalize, per_example_target):
    net, shape = models()[name]
    f, params = fattr.functional(net)
    x = torch.randn(shape, dtype=torch.float64)
    target = torch.arange(shape[0]) % 3 if per_example_target else 1
    a = fattr.saliency(f, abs=False)(params, x, target)
    perturbations = 0.1 * torch.randn(7, *shape, dtype=torch.float64)
    rows = interleaved(perturbations)
    expected = captum_metrics.infidelity(net, lambda inputs: (rows, inputs - rows), x, a,
                                         target=target, n_perturb_samples=7, normalize=normalize)
    got = fattr.metrics.infidelity(f, params, x, a, target, perturbations, normalize=normalize)
    scale = expected.abs().max()
    assert got.shape == (shape[0],)
    # captum's normalize expands (a - b)^2 into a^2 - 2ab + b^2, which loses digits
    torch.testing.assert_close(got, expected, rtol=1e-7, atol=1e-9 * scale)


@pytest.mark.parametrize("name", ["mlp", "cnn"])
@pytest.mark.parametrize("method", ["saliency", "input_x_gradient"])
def test_sensitivity_max_matches_captum(name, method):
    net, shape = models()[name]
    f, params = fattr.functional(net)
    x = torch.randn(shape, dtype=torch.float64)
    target = torch.arange(shape[0]) % 3
    ours = {"saliency": fattr.saliency(f), "input_x_gradient": fattr.input_x_gradient(f)}[method]
    theirs = {"saliency": captum_attr.Saliency,
              "input_x_gradient": captum_attr.InputXGradient}[method](net).attribute
    perturbations = 0.05 * torch.randn(6, *shape, dtype=torch.float64)
    rows = interleaved(perturbations)
    expected = captum_metrics.sensitivity_max(theirs, x, lambda inputs: inputs + rows,
                                              n_perturb_samples=6, target=target)
    got = fattr.metrics.sensitivity_max(ours, params, x, target, perturbations)
    assert got.shape == (shape[0],) and bool((got > 0).all())
    torch.testing.assert_close(got, expected, rtol=1e-10, atol=1e-12)


def test_sensitivity_max_default_draws_match_captum_in_distribution():
    """Uniform noise in [-radius, radius]: fattr's draw handed to captum gives the same value;
    a larger radius gives larger sensitivity."""
    net, shape = models()["mlp"]
    f, params = fattr.functional(net)
    x = torch.randn(shape, dtype=torch.float64)
    sal = fattr.saliency(f)
    small = fattr.metrics.sensitivity_max(sal, params, x, 0, radius=0.01,
                                          generator=torch.Generator().manual_seed(0))
    large = fattr.metrics.sensitivity_max(sal, params, x, 0, radius=0.2,
                                          generator=torch.Generator().manual_seed(0))
    drawn = 0.01 * (2 * torch.rand((10, *shape), generator=torch.Generator().manual_seed(0),
                                   dtype=torch.float64) - 1)
    again = fattr.metrics.sensitivity_max(sal, params, x, 0, drawn)
    torch.testing.assert_close(small, again)
    assert bool((large > small).all())
