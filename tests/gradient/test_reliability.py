"""Bad input gets a clear error naming the argument; the user's model is never modified."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import fattr
from tests.conftest import assert_unchanged, mlp, resnet18, small_cnn, state_snapshot

ALL = {
    "saliency": lambda f: fattr.saliency(f),
    "input_x_gradient": fattr.input_x_gradient,
    "integrated_gradients": lambda f: fattr.integrated_gradients(f, steps=3),
    "gradient_shap": lambda f: fattr.gradient_shap(f, samples=2),
    "smoothgrad": lambda f: fattr.smoothgrad(fattr.saliency(f), samples=2),
    "vargrad": lambda f: fattr.vargrad(fattr.saliency(f), samples=2),
}


@pytest.fixture
def setup():
    net = mlp()
    f, params = fattr.functional(net)
    return net, f, params, torch.randn(4, 5, dtype=torch.float64)


@pytest.mark.parametrize("name", ALL)
@pytest.mark.parametrize("target, match", [
    (3, "target 3 is out of range for the output of shape \\(\\d+, 3\\)"),
    (-4, "out of range"),
    ((0, 1), "has 2 indices but the output of shape \\(\\d+, 3\\) has 1"),
    (torch.tensor([0, 1, 2, 3]), "out of range"),
    ([0, 1, 2], "one index per example, shape \\(4,\\).*got shape \\(3,\\)"),
    (torch.tensor([0, 1, 2, 0, 1]), "got shape \\(5,\\)"),
    (torch.tensor([0.0, 1, 2, 0]), "integer indices"),
    (None, "one scalar per example"),
    (lambda out: out, "the callable selects shape \\(.*, 3\\)"),
    ("cat", "target must be"),
])
def test_bad_targets(setup, name, target, match):
    _, f, params, x = setup
    with pytest.raises(fattr.FattrError, match=match):
        ALL[name](f)(params, x, target)


def test_negative_targets_index_from_the_end(setup):
    _, f, params, x = setup
    sal = fattr.saliency(f, abs=False)
    torch.testing.assert_close(sal(params, x, -1), sal(params, x, 2))
    torch.testing.assert_close(sal(params, x, torch.tensor([-1, -2, 0, 1])),
                               sal(params, x, torch.tensor([2, 1, 0, 1])))


def test_error_message_names_the_method_and_the_users_shapes(setup):
    _, f, params, x = setup
    with pytest.raises(fattr.FattrError, match="^integrated_gradients: target 7 is out of range "
                       "for the output of shape \\(4, 3\\)"):
        fattr.integrated_gradients(f)(params, x, 7)
    with pytest.raises(fattr.FattrError, match="^smoothgrad: on the 2 noisy copies of each "
                       "example: saliency: target 7"):
        fattr.smoothgrad(fattr.saliency(f), samples=2)(params, x, 7)


@pytest.mark.parametrize("baseline, match", [
    (torch.zeros(4, 6), "baseline of shape \\(4, 6\\) does not broadcast to x of shape \\(4, 5\\)"),
    (torch.zeros(3, 5), "does not broadcast"),
    ("zeros", "baseline must be None, a number or a tensor"),
])
def test_bad_baseline(setup, baseline, match):
    _, f, params, x = setup
    with pytest.raises(fattr.FattrError, match=match):
        fattr.integrated_gradients(f, steps=3)(params, x, 0, baseline=baseline)


def test_bad_baseline_distribution(setup):
    _, f, params, x = setup
    with pytest.raises(fattr.FattrError, match="baselines must be a distribution of shape"):
        fattr.gradient_shap(f)(params, x, 0, baselines=torch.zeros(5))


@pytest.mark.parametrize("name", ALL)
def test_integer_input(setup, name):
    _, f, params, _ = setup
    with pytest.raises(fattr.FattrError, match="dtype torch.int64.*floating-point"):
        ALL[name](f)(params, torch.ones(2, 5, dtype=torch.long), 0)


@pytest.mark.parametrize("name", ALL)
@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_non_finite_input(setup, name, bad):
    _, f, params, x = setup
    x = x.clone()
    x[1, 2] = bad
    with pytest.raises(fattr.FattrError, match="NaN or Inf"):
        ALL[name](f)(params, x, 0)


@pytest.mark.parametrize("layer", [nn.BatchNorm1d(8), nn.Dropout(0.5)])
def test_training_mode_is_refused(layer):
    net = nn.Sequential(nn.Linear(5, 8), layer, nn.Linear(8, 3)).double().train()
    f, params = fattr.functional(net)
    with pytest.raises(fattr.FattrError, match="in training mode.*model.eval\\(\\)"):
        fattr.saliency(f)(params, torch.randn(2, 5, dtype=torch.float64), 0)
    net.eval()  # the same f works once the model is in eval mode
    assert fattr.saliency(f)(params, torch.randn(2, 5, dtype=torch.float64), 0).shape == (2, 5)


def test_unknown_quadrature_and_bad_configuration(setup):
    _, f, _, _ = setup
    with pytest.raises(fattr.FattrError, match="unknown quadrature method 'simpson'.*gaussleg"):
        fattr.integrated_gradients(f, method="simpson")
    with pytest.raises(fattr.FattrError, match="steps must be a positive int"):
        fattr.integrated_gradients(f, steps=0)
    with pytest.raises(fattr.FattrError, match="riemann_trapezoid needs steps >= 2"):
        fattr.integrated_gradients(f, steps=1, method="riemann_trapezoid")
    with pytest.raises(fattr.FattrError, match="batch_size must be a positive int"):
        fattr.integrated_gradients(f, batch_size=0)
    with pytest.raises(fattr.FattrError, match="samples must be an int >= 1"):
        fattr.smoothgrad(fattr.saliency(f), samples=0)
    with pytest.raises(fattr.FattrError, match="stdev must be >= 0"):
        fattr.smoothgrad(fattr.saliency(f), stdev=-1.0)
    with pytest.raises(fattr.FattrTypeError, match="attr_fn must be an attribution function"):
        fattr.smoothgrad("not callable")
    with pytest.raises(TypeError, match="must be callable as f\\(params, x\\)"):
        fattr.saliency(42)


def test_model_output_that_is_not_a_tensor(setup):
    net, _, params, x = setup
    f = lambda p, x: {"logits": fattr.functional(net)[0](p, x)}
    with pytest.raises(fattr.FattrError, match="returned dict, not a tensor. Pass output="):
        fattr.saliency(f)(params, x, 0)
    ok = fattr.saliency(f, output=lambda o: o["logits"])(params, x, 0)
    assert ok.shape == x.shape


@pytest.mark.parametrize("name", ALL)
def test_empty_batch_returns_empty(setup, name):
    _, f, params, _ = setup
    empty = torch.zeros(0, 5, dtype=torch.float64)
    out = ALL[name](f)(params, empty, 0)
    assert out.shape == (0, 5) and out.dtype == torch.float64


def test_functional_rejects_non_modules():
    with pytest.raises(fattr.FattrTypeError, match="expected a torch.nn.Module, got function"):
        fattr.functional(lambda x: x)


@pytest.mark.parametrize("name", ALL)
def test_model_unchanged_after_every_call(name):
    net = resnet18()
    net.layer1.register_forward_hook(lambda *a: None)  # a user's own hook survives untouched
    before = state_snapshot(net)
    f, params = fattr.functional(net)
    x = torch.randn(2, 3, 32, 32)
    ALL[name](f)(params, x, torch.tensor([1, 2]))
    assert_unchanged(net, before)
    with pytest.raises(fattr.FattrError):
        ALL[name](f)(params, x, torch.tensor([1, 2, 3]))
    assert_unchanged(net, before)


def test_functional_params_share_storage_with_the_module():
    net = small_cnn()
    f, params = fattr.functional(net)
    names = [n for n, _ in net.named_parameters()] + [n for n, _ in net.named_buffers()]
    assert set(params) == set(names)
    for name, p in net.named_parameters():
        assert params[name].data_ptr() == p.data_ptr() and not params[name].requires_grad
    x = torch.randn(2, 1, 8, 8, dtype=torch.float64)
    torch.testing.assert_close(f(params, x), net(x))
    with torch.no_grad():
        net[0].weight.mul_(2.0)  # later in-place updates of the module show through
    torch.testing.assert_close(f(params, x), net(x))
