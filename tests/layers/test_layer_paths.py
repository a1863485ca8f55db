"""Layer path methods (layer IG, internal influence, conductance, neuron conductance, layer
GradientSHAP): captum parity, axioms, composition and reliability."""

from __future__ import annotations

from collections import OrderedDict

import pytest
import torch
from torch import nn
from torch.func import grad, vmap

import fattr
from tests.conftest import assert_unchanged, small_cnn, state_snapshot

CAPTUM = {  # fattr name -> captum class; captum builds step sizes in float32, hence rtol 1e-6
    "layer_integrated_gradients": "LayerIntegratedGradients",
    "internal_influence": "InternalInfluence",
    "layer_conductance": "LayerConductance",
}


@pytest.fixture
def cnn():
    net = small_cnn()
    f, params = fattr.functional(net)
    x = torch.randn(3, 1, 8, 8, dtype=torch.float64)
    return net, f, params, x, 0.1 * torch.randn(3, 1, 8, 8, dtype=torch.float64)


@pytest.mark.parametrize("rule", ["gausslegendre", "riemann_right"])
@pytest.mark.parametrize("name", CAPTUM)
def test_captum_parity(cnn, name, rule):
    import captum.attr as ca

    net, f, params, x, baseline = cnn
    expected = getattr(ca, CAPTUM[name])(net, net[4]).attribute(
        x, baseline, target=[0, 3, 1], n_steps=7, method=rule)
    got = getattr(fattr, name)(f, "4", steps=7, method=rule, batch_size=5)(
        params, x, [0, 3, 1], baseline=baseline)
    torch.testing.assert_close(got, expected, rtol=1e-6, atol=1e-9)
    assert got.abs().max() > 1e-3


@pytest.mark.parametrize("neuron", [(2, 1, 3), 2 * 16 + 1 * 4 + 3])
def test_neuron_conductance_captum_parity(cnn, neuron):
    import captum.attr as ca

    net, f, params, x, baseline = cnn
    captum_nc = ca.NeuronConductance(net, net[4])
    for rule, factor in [("gausslegendre", 1.0), ("riemann_trapezoid", 7 / 6)]:
        expected = captum_nc.attribute(x, (2, 1, 3), baseline, target=[0, 3, 1], n_steps=7,
                                       method=rule)
        got = fattr.neuron_conductance(f, "4", neuron, steps=7, method=rule, batch_size=4)(
            params, x, [0, 3, 1], baseline=baseline)
        # fattr's trapezoid weights sum to 1, captum's to (n - 1) / n
        torch.testing.assert_close(got, expected * factor, rtol=1e-6, atol=1e-10)
    assert got.abs().max() > 1e-4


def test_neuron_conductance_callable_neuron(cnn):
    _, f, params, x, baseline = cnn
    by_tuple = fattr.neuron_conductance(f, "4", (2, 1, 3), steps=5)
    by_callable = fattr.neuron_conductance(f, "4", lambda a: a[:, 2, 1, 3], steps=5)
    torch.testing.assert_close(by_callable(params, x, 1, baseline=baseline),
                               by_tuple(params, x, 1, baseline=baseline))


def test_layer_integrated_gradients_on_token_ids():
    import captum.attr as ca

    torch.manual_seed(0)
    net = nn.Sequential(OrderedDict(emb=nn.Embedding(20, 4), flat=nn.Flatten(),
                                    hidden=nn.Linear(20, 8), act=nn.Tanh(),
                                    out=nn.Linear(8, 3))).double().eval()
    f, params = fattr.functional(net)
    ids = torch.randint(1, 20, (4, 5))
    pads = torch.zeros_like(ids)
    expected = ca.LayerIntegratedGradients(net, net.emb).attribute(ids, pads, target=2,
                                                                   n_steps=16)
    got = fattr.layer_integrated_gradients(f, "emb", steps=16)(params, ids, 2, baseline=pads)
    torch.testing.assert_close(got, expected, rtol=1e-6, atol=1e-9)
    gap = got.flatten(1).sum(1) - (f(params, ids)[:, 2] - f(params, pads)[:, 2])
    assert gap.abs().max() < 1e-4  # completeness, up to the quadrature error


def test_conductance_sums_to_the_output_change(cnn):
    _, f, params, x, baseline = cnn
    c = fattr.layer_conductance(f, "4", steps=200)(params, x, [0, 3, 1], baseline=baseline)
    rows = torch.arange(3)
    change = f(params, x)[rows, [0, 3, 1]] - f(params, baseline)[rows, [0, 3, 1]]
    torch.testing.assert_close(c.flatten(1).sum(1), change, rtol=2e-2, atol=1e-3)


def test_layer_gradient_shap_with_a_linear_head_equals_captum():
    """After the layer the model is linear, so the random path points do not matter."""
    import captum.attr as ca

    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(1, 3, 3), nn.ReLU(), nn.Flatten(), nn.Linear(27, 4))
    net = net.double().eval()
    f, params = fattr.functional(net)
    x = torch.randn(3, 1, 5, 5, dtype=torch.float64)
    refs = torch.randn(1, 1, 5, 5, dtype=torch.float64)
    expected = ca.LayerGradientShap(net, net[2]).attribute(x, refs, n_samples=4,
                                                           target=[0, 3, 1])
    got = fattr.layer_gradient_shap(f, "2", samples=4)(params, x, [0, 3, 1], baselines=refs)
    torch.testing.assert_close(got, expected)
    torch.testing.assert_close(got, (net[:3](x) - net[:3](refs)) * net[3].weight[[0, 3, 1]])


def test_layer_gradient_shap_draws(cnn):
    """The same draws as a per-sample re-derivation; batch_size does not change them."""
    net, f, params, x, _ = cnn
    refs = torch.randn(5, 1, 8, 8, dtype=torch.float64)
    lgs = fattr.layer_gradient_shap(f, "4", samples=3, stdev=0.1)
    got = lgs(params, x, [0, 3, 1], baselines=refs, generator=torch.Generator().manual_seed(2))
    again = fattr.layer_gradient_shap(f, "4", samples=3, stdev=0.1, batch_size=2)(
        params, x, [0, 3, 1], baselines=refs, generator=torch.Generator().manual_seed(2))
    torch.testing.assert_close(again, got)
    g = torch.Generator().manual_seed(2)
    pick = torch.randint(5, (3, 3), generator=g)
    noise = torch.randn((3, *x.shape), generator=g, dtype=x.dtype) * 0.1
    alphas = torch.rand((3, 3), generator=g, dtype=x.dtype)
    grad_at = fattr.layer_gradient_x_activation  # gradient x activation / activation = gradient
    expected = 0
    for s in range(3):
        start, end = refs[pick[s]], x + noise[s]
        point = start + alphas[s].reshape(3, 1, 1, 1) * (end - start)
        gradient = grad_at(f, "4")(params, point, [0, 3, 1]) / net[:5](point)
        expected = expected + gradient * (net[:5](end) - net[:5](start)) / 3
    torch.testing.assert_close(got, expected.detach())


METHODS = {
    "layer_integrated_gradients": lambda f: fattr.layer_integrated_gradients(f, "4", steps=4),
    "internal_influence": lambda f: fattr.internal_influence(f, "4", steps=4),
    "layer_conductance": lambda f: fattr.layer_conductance(f, "4", steps=4),
    "neuron_conductance": lambda f: fattr.neuron_conductance(f, "4", (1, 2, 2), steps=4),
}


@pytest.mark.parametrize("name", METHODS)
def test_composition(cnn, name):
    net, f, params, x, baseline = cnn
    attr = METHODS[name](f)
    targets = torch.tensor([[0, 3, 1], [2, 2, 0]])
    mapped = vmap(attr, in_dims=(None, None, 0))(params, x, targets)
    for k in range(2):
        torch.testing.assert_close(mapped[k], attr(params, x, targets[k]))
    one = METHODS[name](fattr.per_example(f))
    per_example = vmap(lambda p, xi, ti, bi: one(p, xi, ti, baseline=bi),
                       in_dims=(None, 0, 0, 0))(params, x, targets[0], baseline)
    torch.testing.assert_close(per_example, attr(params, x, targets[0], baseline=baseline))
    weights = {k: v.detach() for k, v in net.named_parameters()}
    loss = lambda w: attr({**params, **w}, x, targets[0]).square().sum()
    g = grad(loss)(weights)
    direction = {k: torch.randn_like(v) for k, v in weights.items()}
    eps = 1e-6
    numeric = (loss({k: v + eps * direction[k] for k, v in weights.items()})
               - loss({k: v - eps * direction[k] for k, v in weights.items()})) / (2 * eps)
    torch.testing.assert_close(sum((g[k] * direction[k]).sum() for k in weights), numeric,
                               rtol=1e-4, atol=1e-8)


def test_reliability(cnn):
    net, f, params, x, _ = cnn
    before = state_snapshot(net)
    with pytest.raises(ValueError, match="unknown quadrature method 'simpson'"):
        fattr.layer_integrated_gradients(f, "4", method="simpson")
    with pytest.raises(ValueError, match="steps must be a positive int"):
        fattr.layer_conductance(f, "4", steps=0)
    with pytest.raises(ValueError, match="batch_size must be a positive int"):
        fattr.internal_influence(f, "4", batch_size=-1)
    with pytest.raises(ValueError, match="neuron must be an int"):
        fattr.neuron_conductance(f, "4", neuron=[1, 2])
    with pytest.raises(ValueError, match="samples must be an int >= 1"):
        fattr.layer_gradient_shap(f, "4", samples=0)
    with pytest.raises(ValueError, match="stdev must be >= 0"):
        fattr.layer_gradient_shap(f, "4", stdev=-1.0)
    with pytest.raises(ValueError, match="no layer named '5.0'"):
        fattr.layer_conductance(f, "5.0")
    with pytest.raises(ValueError, match="does not broadcast to x"):
        fattr.layer_integrated_gradients(f, "4")(params, x, 0, baseline=torch.zeros(2, 8))
    with pytest.raises(ValueError, match="out of range"):
        fattr.neuron_conductance(f, "4", (9, 0, 0), steps=2)(params, x, 0)
    with pytest.raises(ValueError, match="out of range"):
        fattr.layer_conductance(f, "4", steps=2)(params, x, 11)
    assert_unchanged(net, before)
    for name in METHODS:
        assert METHODS[name](f)(params, x[:0], 0).shape[0] == 0
