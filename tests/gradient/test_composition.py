"""Composition: vmap over examples and targets, grad through attributions, batch_size."""

from __future__ import annotations

import pytest
import torch
from torch.func import grad, vmap

import fattr
from tests.conftest import mlp, small_cnn

METHODS = {
    "saliency": lambda f: fattr.saliency(f, abs=False),
    "input_x_gradient": fattr.input_x_gradient,
    "integrated_gradients": lambda f: fattr.integrated_gradients(f, steps=6),
    "ig_trapezoid": lambda f: fattr.integrated_gradients(f, steps=5, method="riemann_trapezoid"),
}


def seeded(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


@pytest.fixture(params=["mlp", "cnn"])
def case(request):
    if request.param == "mlp":
        return mlp(act=torch.nn.Tanh), torch.randn(4, 5, dtype=torch.float64)
    return small_cnn(), torch.randn(4, 1, 8, 8, dtype=torch.float64)


@pytest.mark.parametrize("name", METHODS)
def test_batched_equals_vmap_over_per_example(case, name):
    net, x = case
    f, params = fattr.functional(net)
    target = torch.tensor([0, 2, 1, 0])
    batched = METHODS[name](f)(params, x, target)
    mapped = vmap(METHODS[name](fattr.per_example(f)), in_dims=(None, 0, 0))(params, x, target)
    torch.testing.assert_close(mapped, batched, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("name", METHODS)
def test_vmap_over_targets(case, name):
    net, x = case
    f, params = fattr.functional(net)
    attr = METHODS[name](f)
    targets = torch.tensor([[0, 1, 2, 0], [2, 2, 2, 2], [1, 0, 1, 0]])
    mapped = vmap(attr, in_dims=(None, None, 0))(params, x, targets)
    assert mapped.shape == (3, *x.shape)
    for k in range(3):
        torch.testing.assert_close(mapped[k], attr(params, x, targets[k]), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("name", ["smoothgrad", "gradient_shap"])
def test_vmap_over_targets_stochastic(name):
    """With the same generator state per target, vmap gives the K separate calls."""
    f, params = fattr.functional(mlp(act=torch.nn.Tanh))
    x = torch.randn(3, 5, dtype=torch.float64)
    if name == "smoothgrad":
        attr = fattr.smoothgrad(fattr.saliency(f, abs=False), samples=5)
    else:
        attr = fattr.gradient_shap(f, samples=5, stdev=0.1)
    targets = torch.tensor([[0, 1, 2], [2, 2, 0]])
    call = lambda t: attr(params, x, t, generator=seeded(3))
    mapped = vmap(call, randomness="same")(targets)
    for k in range(2):
        torch.testing.assert_close(mapped[k], call(targets[k]), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("name", ["saliency", "integrated_gradients"])
def test_grad_through_attribution_matches_autograd(case, name):
    net, x = case
    f, params = fattr.functional(net)
    attr = METHODS[name](f)
    target = torch.tensor([0, 2, 1, 0])

    def loss(p):
        return (attr(p, x, target) ** 2).sum()

    floats = fattr.trainable(f, params)  # not BatchNorm's buffers: not differentiable
    assert set(floats) == {n for n, _ in net.named_parameters()}
    functional_grads = grad(lambda p: loss({**params, **p}))(floats)
    leaves = {k: v.clone().requires_grad_() for k, v in floats.items()}
    value = loss({**params, **leaves})
    autograd_grads = torch.autograd.grad(value, list(leaves.values()), allow_unused=True,
                                         create_graph=True)
    nonzero = 0
    for (k, _), g in zip(leaves.items(), autograd_grads):
        g = torch.zeros_like(leaves[k]) if g is None else g
        torch.testing.assert_close(functional_grads[k], g, rtol=1e-10, atol=1e-12)
        nonzero += int(g.abs().sum() > 0)
    assert nonzero >= 2  # the attribution really depends on the weights


def test_grad_through_ig_matches_finite_differences():
    f, params = fattr.functional(mlp(act=torch.nn.Tanh))
    x = torch.randn(2, 5, dtype=torch.float64)
    attr = fattr.integrated_gradients(f, steps=5)
    loss = lambda p: attr(p, x, 1).pow(2).sum()
    analytic = grad(loss)(params)["2.weight"][3, 4]
    eps = 1e-6
    bumped = lambda d: {**params, "2.weight": params["2.weight"].index_put(
        (torch.tensor([3]), torch.tensor([4])), params["2.weight"][3, 4] + d)}
    numeric = (loss(bumped(eps)) - loss(bumped(-eps))) / (2 * eps)
    torch.testing.assert_close(analytic, numeric, rtol=1e-6, atol=1e-9)


def test_attribution_carries_graph_when_params_require_grad():
    f, params = fattr.functional(mlp())
    x = torch.randn(2, 5, dtype=torch.float64)
    leaf = params["0.weight"].clone().requires_grad_()
    a = fattr.integrated_gradients(f, steps=4)(dict(params, **{"0.weight": leaf}), x, 0)
    assert a.requires_grad
    (g,) = torch.autograd.grad(a.sum(), leaf)
    assert g.abs().sum() > 0


@pytest.mark.parametrize("batch_size", [1, 3, 7, 1000])
def test_batch_size_changes_nothing(case, batch_size):
    net, x = case
    f, params = fattr.functional(net)
    target = torch.tensor([0, 2, 1, 0])
    ig = lambda bs: fattr.integrated_gradients(f, steps=9, batch_size=bs)(params, x, target)
    torch.testing.assert_close(ig(batch_size), ig(None), rtol=1e-12, atol=1e-13)
    shap = lambda bs: fattr.gradient_shap(f, samples=4, stdev=0.2, batch_size=bs)(
        params, x, target, baselines=torch.zeros_like(x[:2]), generator=seeded(5))
    torch.testing.assert_close(shap(batch_size), shap(None), rtol=1e-12, atol=1e-13)


@pytest.mark.parametrize("wrapper", [fattr.smoothgrad, fattr.smoothgrad_sq, fattr.vargrad])
@pytest.mark.parametrize("batch_size", [1, 4, 5, None])
def test_smoothgrad_same_seed_same_result_for_every_batch_size(case, wrapper, batch_size):
    net, x = case
    f, params = fattr.functional(net)
    target = torch.tensor([0, 2, 1, 0])
    attr = lambda bs: wrapper(fattr.saliency(f, abs=False), samples=6, batch_size=bs)(
        params, x, target, generator=seeded(11))
    torch.testing.assert_close(attr(batch_size), attr(None), rtol=1e-12, atol=1e-13)


def test_smoothgrad_matches_its_definition():
    """SG = mean of attributions of x + N(0, (stdev * (max - min))^2) noise, per example."""
    f, params = fattr.functional(mlp(act=torch.nn.Tanh))
    x = torch.randn(3, 5, dtype=torch.float64)
    x[1] *= 10  # per-example noise scale
    sal = fattr.saliency(f, abs=False)
    noise = torch.randn((8, *x.shape), generator=seeded(2), dtype=x.dtype)
    span = x.amax(1) - x.amin(1)
    per_sample = torch.stack([sal(params, x + 0.2 * span[:, None] * n, 1) for n in noise])
    for wrapper, reduce in [(fattr.smoothgrad, lambda a: a.mean(0)),
                            (fattr.smoothgrad_sq, lambda a: (a**2).mean(0)),
                            (fattr.vargrad, lambda a: a.var(0, unbiased=False))]:
        ours = wrapper(sal, samples=8, stdev=0.2, batch_size=5)(params, x, 1,
                                                               generator=seeded(2))
        torch.testing.assert_close(ours, reduce(per_sample), rtol=1e-10, atol=1e-12)


def test_smoothgrad_wraps_any_attribution_with_per_example_kwargs():
    """Per-example baselines travel with their example through the noisy copies."""
    f, params = fattr.functional(mlp(act=torch.nn.Tanh))
    x = torch.randn(3, 5, dtype=torch.float64)
    baseline = torch.randn(3, 5, dtype=torch.float64)
    ig = fattr.integrated_gradients(f, steps=4)
    noise = torch.randn((4, *x.shape), generator=seeded(4), dtype=x.dtype)
    span = (x.amax(1) - x.amin(1))[:, None]
    expected = torch.stack([ig(params, x + 0.1 * span * n, 0, baseline=baseline)
                            for n in noise]).mean(0)
    ours = fattr.smoothgrad(ig, samples=4, stdev=0.1, batch_size=2)(
        params, x, 0, baseline=baseline, generator=seeded(4))
    torch.testing.assert_close(ours, expected, rtol=1e-10, atol=1e-12)


def test_smoothgrad_over_per_example_attribution():
    f, params = fattr.functional(mlp(act=torch.nn.Tanh))
    x = torch.randn(5, dtype=torch.float64)
    sg = fattr.smoothgrad(fattr.saliency(fattr.per_example(f), abs=False), samples=4, stdev=0.1)
    ours = sg(params, x, 1, generator=seeded(7))
    noise = torch.randn((4, 5), generator=seeded(7), dtype=x.dtype) * 0.1 * (x.max() - x.min())
    expected = fattr.saliency(f, abs=False)(params, x + noise, 1).mean(0)
    torch.testing.assert_close(ours, expected, rtol=1e-10, atol=1e-12)
