"""Every rule method under vmap (targets, per-example inputs), grad (double backward against
finite differences), the hook formulation, and torch.compile."""

from __future__ import annotations

import pytest
import torch
from torch.func import grad, vmap

import fattr
from tests.conftest import directional_derivative, small_cnn

POOL = 0.3 * torch.randn(3, 1, 8, 8, dtype=torch.float64,
                        generator=torch.Generator().manual_seed(9))

METHODS = {
    "guided_backprop": (fattr.guided_backprop, {}),
    "guided_backprop_hook": (lambda f: fattr.guided_backprop(f, mode="hook"), {}),
    "deconvnet": (fattr.deconvnet, {}),
    "deconvnet_hook": (lambda f: fattr.deconvnet(f, mode="hook"), {}),
    "rectgrad": (lambda f: fattr.rectgrad(f, percentile=70.0), {}),
    "rectgrad_hook": (lambda f: fattr.rectgrad(f, percentile=70.0, mode="hook"), {}),
    "deeplift": (fattr.deeplift, {"baseline": 0.1}),
    "deeplift_shap": (lambda f: fattr.deeplift_shap(f, batch_size=4), {"baselines": POOL}),
}


@pytest.fixture
def setup():
    net = small_cnn()
    f, params = fattr.functional(net)
    x = torch.randn(3, 1, 8, 8, dtype=torch.float64)
    return net, f, params, x


@pytest.mark.parametrize("name", list(METHODS))
def test_vmap_over_targets_equals_separate_calls(name, setup):
    _, f, params, x = setup
    make, kw = METHODS[name]
    attr = make(f)
    targets = torch.tensor([[0, 1, 2], [3, 3, 0]])
    mapped = vmap(lambda t: attr(params, x, t, **kw))(targets)
    loop = torch.stack([attr(params, x, t, **kw) for t in targets])
    assert mapped.shape == (2, *x.shape) and loop.abs().max() > 0
    torch.testing.assert_close(mapped, loop, rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("name", list(METHODS))
def test_vmap_over_per_example_equals_batched(name, setup):
    _, f, params, x = setup
    make, kw = METHODS[name]
    target = torch.tensor([1, 0, 3])
    one = make(fattr.per_example(f))
    mapped = vmap(lambda xi, ti: one(params, xi, ti, **kw))(x, target)
    torch.testing.assert_close(mapped, make(f)(params, x, target, **kw), rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("name", list(METHODS))
def test_gradient_wrt_params_matches_finite_differences(name, setup):
    """d/dt loss(params + t v) at t=0, by torch.func.grad and by central differences."""
    _, f, params, x = setup
    make, kw = METHODS[name]
    attr = make(f)
    weights = torch.randn_like(x)
    trained = {k: v for k, v in params.items() if k.endswith(("weight", "bias"))}

    def loss(trained):
        return (attr({**params, **trained}, x, 2, **kw) * weights).sum()

    d = directional_derivative(loss, trained)
    assert sum(v.abs().sum() for v in d.grads.values()) > 0
    torch.testing.assert_close(d.analytic, d.numeric, rtol=1e-5, atol=1e-8)


def _directional_check(loss, params, names, seed=0):
    """grad(loss) along a random direction of the named params == central differences."""
    trained = {k: params[k] for k in names}
    gen = torch.Generator().manual_seed(seed)
    direction = {k: torch.randn(v.shape, dtype=v.dtype, generator=gen) for k, v in trained.items()}
    g = grad(loss)(trained)
    h = 1e-6
    numeric = (loss({k: v + h * direction[k] for k, v in trained.items()})
               - loss({k: v - h * direction[k] for k, v in trained.items()})) / (2 * h)
    assert abs(numeric) > 1e-6
    torch.testing.assert_close(sum((g[k] * direction[k]).sum() for k in names), numeric,
                               rtol=1e-5, atol=1e-8)


def test_grad_of_smoothgrad_over_deeplift_matches_finite_differences(setup):
    _, f, params, x = setup
    sg = fattr.smoothgrad(fattr.deeplift(f), samples=3, stdev=0.1)
    weights = torch.randn_like(x)

    def loss(trained):
        noise = torch.Generator().manual_seed(3)  # the same noise at every evaluation
        return (sg({**params, **trained}, x, 1, generator=noise, baseline=0.1) * weights).sum()

    _directional_check(loss, params, [k for k in params if k.endswith(("weight", "bias"))])


def test_gradient_methods_over_a_rewritten_model_differentiate_the_true_forward(setup):
    """A tree from `fattr.rewrite` under any gradient method: the rule applies in the method's
    own gradient, and a gradient of the result w.r.t. the parameters sees the activations' true
    derivatives (checked against finite differences; DeepLIFT's rule reads forward values)."""
    net, _, params, x = setup
    guided, _ = fattr.functional(fattr.rewrite(net, {torch.nn.ReLU: fattr.rules.GUIDED}))
    torch.testing.assert_close(fattr.saliency(guided, abs=False)(params, x, 2),
                               fattr.guided_backprop(fattr.functional(net)[0])(params, x, 2))
    rules = {(torch.nn.ReLU, torch.nn.MaxPool2d): fattr.rules.deeplift_rule()}
    rescaled, _ = fattr.functional(fattr.rewrite(net, rules))
    reference = torch.full_like(x, 0.1)

    def paired(p, inputs):  # the input half of a doubled batch with fixed references
        return rescaled(p, torch.cat([inputs, reference]))[: inputs.shape[0]]

    ig = fattr.integrated_gradients(paired, steps=3)
    weights = torch.randn_like(x)
    _directional_check(lambda p: (ig({**params, **p}, x, 2, baseline=0.3) * weights).sum(),
                       params, [k for k in params if k.endswith(("weight", "bias"))])


def test_autograd_double_backward_equals_torch_func(setup):
    _, f, params, x = setup
    weight = params["0.weight"].clone().requires_grad_()
    a = fattr.deeplift(f)({**params, "0.weight": weight}, x, 1, baseline=0.1)
    assert a.requires_grad
    by_autograd = torch.autograd.grad(a.pow(2).sum(), weight)[0]
    by_func = grad(lambda w: fattr.deeplift(f)({**params, "0.weight": w}, x, 1,
                                               baseline=0.1).pow(2).sum())(params["0.weight"])
    torch.testing.assert_close(by_autograd, by_func)


@pytest.mark.parametrize("method", [fattr.guided_backprop, fattr.deconvnet, fattr.rectgrad])
def test_hook_mode_equals_function_mode_in_value_and_param_gradient(method, setup):
    _, f, params, x = setup

    def loss(mode, w):
        return method(f, mode=mode)({**params, "4.weight": w}, x, 0).pow(2).sum()

    torch.testing.assert_close(method(f, mode="hook")(params, x, 0), method(f)(params, x, 0))
    torch.testing.assert_close(grad(lambda w: loss("hook", w))(params["4.weight"]),
                               grad(lambda w: loss("function", w))(params["4.weight"]))


def test_forward_mode_fails_clearly(setup):
    _, f, params, x = setup
    attr = fattr.guided_backprop(f)
    with pytest.raises(fattr.FattrError, match="guided_backprop: forward-mode AD"):
        torch.func.jvp(lambda v: attr(params, v, 0), (x,), (torch.ones_like(x),))


@pytest.mark.filterwarnings("ignore::UserWarning")  # dynamo's notes on its graph breaks
def test_torch_compile_of_guided_backprop_gives_the_eager_result():
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(6, 8), torch.nn.ReLU(inplace=True),
                              torch.nn.Linear(8, 3)).double().eval()
    f, params = fattr.functional(net)
    x = torch.randn(4, 6, dtype=torch.float64)
    attr = fattr.guided_backprop(f, mode="hook")
    compiled = torch.compile(attr)
    for target in (1, torch.tensor([0, 2, 1, 1])):
        eager = attr(params, x, target)
        assert eager.abs().max() > 0
        torch.testing.assert_close(compiled(params, x, target), eager, rtol=0, atol=0)
    assert not torch.allclose(eager, fattr.saliency(f, abs=False)(params, x, target))


def test_eager_autograd_through_what_a_callable_target_captures(setup):
    """A tensor only the target captures still gets the attribution's gradient (the rules then
    record their graph), equal to torch.func.grad's."""
    _, f, params, x = setup
    attr = fattr.deeplift(f)
    w = torch.randn(4, dtype=torch.float64)
    tracked = w.clone().requires_grad_()
    a = attr(params, x, lambda out: out @ tracked, baseline=0.1)
    by_autograd = torch.autograd.grad(a.pow(2).sum(), tracked)[0]
    by_func = grad(lambda v: attr(params, x, lambda out: out @ v, baseline=0.1).pow(2).sum())(w)
    assert by_autograd.abs().sum() > 0
    torch.testing.assert_close(by_autograd, by_func)


def test_eager_autograd_reaches_module_parameters_left_out_of_params(setup):
    net, f, params, x = setup
    partial = {k: v for k, v in params.items() if k != "4.weight"}  # net[4].weight is used
    a = fattr.guided_backprop(f)(partial, x, 0)
    g = torch.autograd.grad(a.pow(2).sum(), net[4].weight)[0]
    full = grad(lambda w: fattr.guided_backprop(f)({**params, "4.weight": w}, x, 0).pow(2).sum())
    torch.testing.assert_close(g, full(params["4.weight"]))


def test_plain_calls_record_no_graph(setup):
    _, f, params, x = setup
    for attr in (fattr.guided_backprop(f), fattr.deeplift(f)):
        assert not attr(params, x, 0).requires_grad
    assert fattr.deeplift(f)({k: v.requires_grad_() if k == "0.weight" else v
                              for k, v in dict(params).items()}, x, 0).requires_grad
