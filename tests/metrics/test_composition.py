"""Composition: batch_size never changes a result, per-example models give the batched
values, metrics are differentiable in the parameters, and the model is never modified."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import fattr
from tests.conftest import assert_unchanged, small_cnn, state_snapshot

m = fattr.metrics


@pytest.fixture
def setup():
    net = small_cnn()
    f, params = fattr.functional(net)
    x = torch.randn(3, 1, 8, 8, dtype=torch.float64)
    target = torch.tensor([0, 2, 1])
    a = fattr.saliency(f, abs=False)(params, x, target)
    return net, f, params, x, target, a


def seeded():
    return torch.Generator().manual_seed(0)


CURVES = {
    "deletion": lambda f, p, x, a, t, **k: m.deletion(f, p, x, a, t, steps=5, **k),
    "insertion": lambda f, p, x, a, t, **k: m.insertion(f, p, x, a, t, steps=5, **k),
    "pixel_flipping": lambda f, p, x, a, t, **k: m.pixel_flipping(f, p, x, a, t, steps=5,
                                                                   generator=seeded(), **k),
    "road": lambda f, p, x, a, t, **k: m.road(f, p, x, a, t, steps=5, generator=seeded(), **k),
    "infidelity": lambda f, p, x, a, t, **k: m.infidelity(f, p, x, a, t, samples=4,
                                                          generator=seeded(), **k),
}


@pytest.mark.parametrize("name", CURVES)
def test_batch_size_and_per_example(setup, name):
    net, f, params, x, target, a = setup
    before = state_snapshot(net)
    metric = CURVES[name]
    full = metric(f, params, x, a, target)
    assert full.shape == (3,) and full.dtype == torch.float64
    for batch_size in (1, 4, 7):
        torch.testing.assert_close(metric(f, params, x, a, target, batch_size=batch_size), full)
    one = fattr.per_example(f)
    if name in ("pixel_flipping", "road", "infidelity"):  # noise drawn for the whole batch
        single = metric(one, params, x[1], a[1], target[1])
        assert single.shape == ()
    else:
        single = torch.stack([metric(one, params, x[i], a[i], target[i]) for i in range(3)])
        torch.testing.assert_close(single, full)
    assert_unchanged(net, before)


def test_sensitivity_batch_size_per_call_and_per_example(setup):
    _, f, params, x, target, _ = setup
    ig = fattr.integrated_gradients(f, steps=4)
    full = m.sensitivity_max(ig, params, x, target, generator=seeded(), baseline=0.5)
    chunked = m.sensitivity_max(ig, params, x, target, generator=seeded(), baseline=0.5,
                                batch_size=2)
    torch.testing.assert_close(chunked, full)
    other = m.sensitivity_max(ig, params, x, target, generator=seeded(), baseline=0.0)
    assert not torch.allclose(other, full)  # the per-call baseline reaches the method
    perturbations = 0.02 * torch.randn(5, 3, 1, 8, 8, dtype=torch.float64)
    batched = m.sensitivity_max(fattr.saliency(f), params, x, target, perturbations)
    one = fattr.saliency(fattr.per_example(f))
    single = torch.stack([m.sensitivity_max(one, params, x[i], target[i], perturbations[:, i])
                          for i in range(3)])
    torch.testing.assert_close(single, batched)


def test_infidelity_per_example_with_given_perturbations(setup):
    _, f, params, x, target, a = setup
    perturbations = 0.1 * torch.randn(4, 3, 1, 8, 8, dtype=torch.float64)
    batched = m.infidelity(f, params, x, a, target, perturbations)
    one = fattr.per_example(f)
    single = torch.stack([m.infidelity(one, params, x[i], a[i], target[i], perturbations[:, i])
                          for i in range(3)])
    torch.testing.assert_close(single, batched)


def tanh_mlp():
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(4, 6), nn.Tanh(), nn.Linear(6, 2)).double().eval()


@pytest.mark.parametrize("name", ["deletion", "road", "infidelity", "completeness"])
def test_gradient_in_params_matches_finite_differences(name):
    """torch.autograd.gradcheck of the summed metric as a function of the first layer's
    weight (rankings are fixed by the attribution passed in)."""
    net = tanh_mlp()
    f, params = fattr.functional(net)
    x = torch.randn(2, 4, dtype=torch.float64)
    a = torch.randn(2, 4, dtype=torch.float64)
    images = lambda t: t.reshape(2, 1, 2, 2)
    image_f = lambda p, inputs: f(p, inputs.flatten(1))
    perturbations = 0.1 * torch.randn(3, 2, 4, dtype=torch.float64)
    metric = {
        "deletion": lambda p: m.deletion(f, p, x, a, 1, steps=3),
        "road": lambda p: m.road(image_f, p, images(x), images(a), 1, steps=3, noise=0.0),
        "infidelity": lambda p: m.infidelity(f, p, x, a, 1, perturbations),
        "completeness": lambda p: m.completeness(f, p, x, a, 1),
    }[name]

    def of_weight(weight):
        return metric({**params, "0.weight": weight}).sum()

    weight = params["0.weight"].clone().requires_grad_(True)
    assert torch.autograd.gradcheck(of_weight, (weight,))
    grad = torch.func.grad(of_weight)(params["0.weight"])
    assert grad.abs().sum() > 0


def test_metric_of_an_attribution_is_differentiable_end_to_end():
    """A loss on a metric of an attribution: gradient through saliency and infidelity."""
    net = tanh_mlp()
    f, params = fattr.functional(net)
    x = torch.randn(3, 4, dtype=torch.float64)
    perturbations = 0.1 * torch.randn(2, 3, 4, dtype=torch.float64)

    def loss(p):
        a = fattr.saliency(f, abs=False)(p, x, 0)
        return m.infidelity(f, p, x, a, 0, perturbations).sum() + m.sparseness(a).sum()

    grads = torch.func.grad(loss)(params)
    assert all(torch.isfinite(g).all() for g in grads.values())
    assert grads["0.weight"].abs().sum() > 0
