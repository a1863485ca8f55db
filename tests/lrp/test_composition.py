"""Composition: vmap over targets and examples, grad through relevance (w.r.t. parameters, vs
finite differences in float64), plain autograd, batching, and the user's model untouched."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.func import grad, vmap

import fattr
from tests.conftest import assert_unchanged, state_snapshot
from tests.lrp.models import Residual, conv_net

COMPOSITES = {"epsilon_plus_flat": {}, "epsilon_gamma_box": {"low": -3.0, "high": 3.0},
              "epsilon_alpha2_beta1": {}, "epsilon": {}}


def _setup(seed: int = 0):
    net = conv_net(seed)
    f, params = fattr.functional(net)
    x = torch.randn(3, 2, 8, 8, dtype=torch.float64, generator=torch.Generator().manual_seed(seed))
    return net, f, params, x


@pytest.mark.parametrize("composite", list(COMPOSITES))
def test_vmap_over_targets_equals_one_call_per_target(composite):
    _, f, params, x = _setup()
    attr = fattr.lrp(f, composite, **COMPOSITES[composite])
    targets = torch.tensor([[0, 1, 2], [4, 4, 3], [2, 0, 1]])
    stacked = vmap(attr, in_dims=(None, None, 0))(params, x, targets)
    torch.testing.assert_close(stacked, torch.stack([attr(params, x, t) for t in targets]))


@pytest.mark.parametrize("composite", list(COMPOSITES))
def test_per_example_vmap_equals_the_batched_call(composite):
    _, f, params, x = _setup()
    target = torch.tensor([3, 0, 2])
    batched = fattr.lrp(f, composite, **COMPOSITES[composite])(params, x, target)
    single = fattr.lrp(fattr.per_example(f), composite, **COMPOSITES[composite])
    torch.testing.assert_close(vmap(single, in_dims=(None, 0, 0))(params, x, target), batched)
    torch.testing.assert_close(single(params, x[1], target[1]), batched[1])


def test_rows_are_independent_of_the_rest_of_the_batch():
    _, f, params, x = _setup()
    attr = fattr.lrp(f)
    torch.testing.assert_close(attr(params, x, 1)[1:], attr(params, x[1:], 1))


def _floating(params):
    return {k: v for k, v in params.items() if v.is_floating_point()}


@pytest.mark.parametrize("composite", list(COMPOSITES))
def test_grad_of_relevance_wrt_params_matches_finite_differences(composite):
    _, f, params, x = _setup(1)
    attr = fattr.lrp(f, composite, **COMPOSITES[composite])
    weights = torch.randn_like(x)

    def loss(p):
        return (attr({**params, **p}, x, 2) * weights).sum()

    analytic = grad(loss)(_floating(params))
    # one entry of every parameter and BatchNorm statistic (the head's row of the target)
    for name, index in [("0.weight", (1, 0, 2, 1)), ("0.bias", (2,)), ("1.weight", (3,)),
                        ("1.bias", (0,)), ("1.running_mean", (1,)), ("1.running_var", (2,)),
                        ("4.weight", (5, 3, 1, 1)), ("4.bias", (4,)), ("8.weight", (2, 7))]:
        h = 1e-6
        up, down = params[name].clone(), params[name].clone()
        up[index] += h
        down[index] -= h
        numeric = (loss({name: up}) - loss({name: down})) / (2 * h)
        assert abs(numeric) > 1e-6, name  # the entry matters
        torch.testing.assert_close(analytic[name][index], numeric, rtol=1e-5, atol=1e-9,
                                   msg=f"{composite}: {name}")


def test_grad_through_vmap_over_targets_and_per_example_vmap():
    _, f, params, x = _setup()
    attr = fattr.lrp(f, "epsilon_gamma_box", low=-3.0, high=3.0)
    single = fattr.lrp(fattr.per_example(f), "epsilon_gamma_box", low=-3.0, high=3.0)
    targets = torch.tensor([[0, 1, 2], [4, 4, 3]])
    weights = torch.randn(2, *x.shape, dtype=torch.float64)

    def stacked(p):
        return (vmap(attr, in_dims=(None, None, 0))({**params, **p}, x, targets) * weights).sum()

    def looped(p):
        return sum((attr({**params, **p}, x, t) * w).sum() for t, w in zip(targets, weights))

    def per_example(p):
        return (vmap(single, in_dims=(None, 0, 0))({**params, **p}, x, targets[1])
                * weights[1]).sum()

    expected = grad(looped)(_floating(params))
    for name, value in grad(stacked)(_floating(params)).items():
        torch.testing.assert_close(value, expected[name])
    expected = grad(lambda p: (attr({**params, **p}, x, targets[1]) * weights[1]).sum())
    expected = expected(_floating(params))
    for name, value in grad(per_example)(_floating(params)).items():
        torch.testing.assert_close(value, expected[name])


def test_grad_of_relevance_wrt_params_through_functional_relu_add_and_mean():
    net = Residual().double().eval()
    f, params = fattr.functional(net)
    x = torch.randn(2, 2, 6, 6, dtype=torch.float64)
    attr = fattr.lrp(f, "epsilon_plus")
    analytic = grad(lambda p: attr(p, x, 1).square().sum())(params)
    for name in params:
        direction = torch.randn_like(params[name])
        h = 1e-6
        numeric = (attr({**params, name: params[name] + h * direction}, x, 1).square().sum()
                   - attr({**params, name: params[name] - h * direction}, x, 1).square().sum()
                   ) / (2 * h)
        torch.testing.assert_close((analytic[name] * direction).sum(), numeric, rtol=1e-5,
                                   atol=1e-10)


def _directional_check(loss, params, seed=0):
    """grad(loss) along a random direction of every floating entry == central differences."""
    floating = _floating(params)
    analytic = grad(loss)(floating)
    gen = torch.Generator().manual_seed(seed)
    direction = {k: torch.randn(v.shape, dtype=v.dtype, generator=gen) for k, v in floating.items()}
    h = 1e-6
    numeric = (loss({k: v + h * direction[k] for k, v in floating.items()})
               - loss({k: v - h * direction[k] for k, v in floating.items()})) / (2 * h)
    assert abs(numeric) > 1e-6
    torch.testing.assert_close(sum((analytic[k] * direction[k]).sum() for k in floating),
                               numeric, rtol=1e-5, atol=1e-10)


def test_grad_of_integrated_gradients_over_the_relevance_model_matches_finite_differences():
    """IG's own `grad` asks for relevance; the outer `grad` w.r.t. the parameters sees the true
    derivatives of the forward values the rules read."""
    _, f, params, x = _setup(3)
    ig = fattr.integrated_gradients(fattr.lrp.model(f, "epsilon_gamma_box", low=-3.0, high=3.0),
                                    steps=3)
    weights = torch.randn_like(x)
    _directional_check(lambda p: (ig({**params, **p}, x, 1, baseline=0.1) * weights).sum(),
                       params)


def test_grad_of_smoothgrad_over_lrp_matches_finite_differences():
    _, f, params, x = _setup(4)
    sg = fattr.smoothgrad(fattr.lrp(f), samples=3, stdev=0.1)
    weights = torch.randn_like(x)

    def loss(p):
        noise = torch.Generator().manual_seed(5)  # the same noise at every evaluation
        return (sg({**params, **p}, x, 2, generator=noise) * weights).sum()

    _directional_check(loss, params)


def test_grad_wrt_the_input_matches_finite_differences():
    _, f, params, x = _setup(2)
    attr = fattr.lrp(f, "epsilon_alpha2_beta1")
    analytic = grad(lambda inp: attr(params, inp, 0).square().sum())(x)
    direction = torch.randn_like(x)
    h = 1e-6
    numeric = (attr(params, x + h * direction, 0).square().sum()
               - attr(params, x - h * direction, 0).square().sum()) / (2 * h)
    torch.testing.assert_close((analytic * direction).sum(), numeric, rtol=1e-5, atol=1e-10)


def test_plain_autograd_on_params_equals_torch_func_grad():
    _, f, params, x = _setup()
    attr = fattr.lrp(f)
    leaves = {k: v.clone().requires_grad_(v.is_floating_point()) for k, v in params.items()}
    attr(leaves, x, 1).square().sum().backward()
    expected = grad(lambda p: attr({**params, **p}, x, 1).square().sum())(_floating(params))
    for name, value in expected.items():
        torch.testing.assert_close(leaves[name].grad, value)


def test_relevance_model_composes_with_gradient_methods():
    _, f, params, x = _setup()
    relevance = fattr.lrp.model(f)
    torch.testing.assert_close(relevance(params, x), f(params, x))
    lrp = fattr.lrp(f)(params, x, 1)
    torch.testing.assert_close(fattr.saliency(relevance, abs=False)(params, x, 1), lrp)
    # IG over relevance at one step from the input is (x - baseline) * relevance(x)
    ig = fattr.integrated_gradients(relevance, steps=1, method="riemann_right")
    torch.testing.assert_close(ig(params, x, 1, baseline=0.0), x * lrp)
    # per-example relevance models stay per-example
    single = fattr.lrp.model(fattr.per_example(f))
    torch.testing.assert_close(fattr.saliency(single, abs=False)(params, x[0], 1), lrp[0])


def test_float32_result_dtype_and_no_graph_without_grad():
    net = conv_net().float()
    f, params = fattr.functional(net)
    x = torch.randn(2, 2, 8, 8)
    relevance = fattr.lrp(f)(params, x, 0)
    assert relevance.dtype == torch.float32 and relevance.shape == x.shape
    assert not relevance.requires_grad


def test_forward_mode_is_refused_with_a_clear_error():
    _, f, params, x = _setup()
    attr = fattr.lrp(f)
    with pytest.raises(fattr.FattrError, match="forward-mode"):
        torch.func.jvp(lambda inp: attr(params, inp, 0), (x,), (torch.ones_like(x),))


@pytest.mark.parametrize("composite", list(COMPOSITES))
def test_users_model_is_unchanged(composite):
    net, f, params, x = _setup()
    before = state_snapshot(net)
    attr = fattr.lrp(f, composite, **COMPOSITES[composite])
    attr(params, x, 0)
    grad(lambda p: attr({**params, **p}, x, 0).sum())(_floating(params))
    assert_unchanged(net, before)
    assert net[2].inplace  # the in-place ReLU stays in place in the user's model


def test_users_model_is_unchanged_after_an_error():
    net, f, params, x = _setup()
    before = state_snapshot(net)
    with pytest.raises(fattr.FattrError, match="out of range"):
        fattr.lrp(f)(params, x, 99)
    with pytest.raises(fattr.FattrError, match="one index per example"):
        fattr.lrp(f)(params, x, [0])
    assert_unchanged(net, before)
    assert all(type(m) in (nn.Sequential, nn.Conv2d, nn.BatchNorm2d, nn.ReLU, nn.MaxPool2d,
                           nn.AvgPool2d, nn.Flatten, nn.Linear) for m in net.modules())
