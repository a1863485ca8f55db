"""Functional activations get the rule (never a silent plain gradient), clear errors, and the
user's model unchanged afterwards, also when a call raises."""

from __future__ import annotations

import captum.attr as ca
import pytest
import torch
import torch.nn.functional as F
from torch import nn

import fattr
from fattr.errors import FattrError, FattrTypeError
from tests.conftest import assert_unchanged, mlp, resnet18, small_cnn, state_snapshot

SIGN_METHODS = [fattr.guided_backprop, fattr.deconvnet,
                lambda f, **kw: fattr.rectgrad(f, percentile=60.0, **kw)]
ALL = {
    "guided_backprop": (fattr.guided_backprop, {}),
    "deconvnet": (fattr.deconvnet, {}),
    "rectgrad": (fattr.rectgrad, {}),
    "deeplift": (fattr.deeplift, {"baseline": 0.5}),
    "deeplift_shap": (fattr.deeplift_shap, {"baselines": torch.zeros(2, 1, 8, 8,
                                                                     dtype=torch.float64)}),
}


class FunctionalRelu(nn.Module):
    def __init__(self, call):
        super().__init__()
        torch.manual_seed(0)
        self.a, self.b, self.c = nn.Linear(5, 12), nn.Linear(12, 12), nn.Linear(12, 3)
        self.call = call

    def forward(self, x):
        return self.c(self.call(self.b(self.call(self.a(x)))))


RELU_CALLS = {
    "F.relu": F.relu, "torch.relu": torch.relu, "Tensor.relu": lambda v: v.relu(),
    "F.relu inplace": lambda v: F.relu(v, inplace=True), "torch.relu_": torch.relu_,
    "Tensor.relu_": lambda v: v.relu_(), "F.relu_": F.relu_,
}


@pytest.mark.parametrize("call", list(RELU_CALLS))
@pytest.mark.parametrize("method", SIGN_METHODS, ids=["guided", "deconv", "rectgrad"])
def test_functional_relu_gets_the_rule(call, method):
    functional = FunctionalRelu(RELU_CALLS[call]).double().eval()
    modular = FunctionalRelu(nn.ReLU()).double().eval()
    x = torch.randn(4, 5, dtype=torch.float64)
    f, params = fattr.functional(functional)
    g, _ = fattr.functional(modular)
    for mode in ("function", "hook"):
        ours = method(f, mode=mode)(params, x, 1)
        torch.testing.assert_close(ours, method(g, mode=mode)(params, x, 1))
    plain = fattr.saliency(f, abs=False)(params, x, 1)
    assert not torch.allclose(ours, plain) and not torch.allclose(ours, plain * x)


def test_captum_gives_the_silent_plain_gradient_there():
    net = FunctionalRelu(F.relu).double().eval()
    x = torch.randn(4, 5, dtype=torch.float64)
    f, params = fattr.functional(net)
    plain = fattr.saliency(f, abs=False)(params, x, 1)
    torch.testing.assert_close(ca.GuidedBackprop(net).attribute(x, target=1), plain)
    assert not torch.allclose(fattr.guided_backprop(f)(params, x, 1), plain)


@pytest.mark.parametrize("name", list(ALL))
def test_model_unchanged_after_calls_and_after_errors(name):
    net = small_cnn()
    net[0].register_forward_hook(lambda m, i, o: None)
    before = state_snapshot(net)
    make, kw = ALL[name]
    f, params = fattr.functional(net)
    attr = make(f)
    x = torch.randn(2, 1, 8, 8, dtype=torch.float64)
    attr(params, x, 1, **kw)
    assert_unchanged(net, before)
    with pytest.raises(FattrError, match="out of range"):
        attr(params, x, 9, **kw)
    assert_unchanged(net, before)
    with pytest.raises((RuntimeError, FattrError)):  # the model (or the baselines) refuse
        attr(params, torch.randn(2, 3, 8, 8, dtype=torch.float64), 1, **kw)
    assert_unchanged(net, before)


@pytest.mark.slow
def test_resnet18_unchanged():
    net = resnet18().double()
    before = state_snapshot(net)
    f, params = fattr.functional(net)
    x = torch.randn(1, 3, 32, 32, dtype=torch.float64)
    for make, kw in ALL.values():
        make(f)(params, x, 0, **{k: v for k, v in kw.items() if k == "baseline"})
    assert_unchanged(net, before)
    assert all(m.inplace for m in net.modules() if isinstance(m, nn.ReLU))


@pytest.mark.parametrize("name", list(ALL))
def test_model_not_from_functional(name):
    make, _ = ALL[name]
    net = small_cnn()
    with pytest.raises(FattrTypeError, match=f"{name}: this method rewrites the model's module "
                                             "tree, so the model must come from"):
        make(lambda params, x: net(x))
    assert isinstance(FattrTypeError("x"), TypeError)


def test_per_example_of_a_plain_function_is_refused_too():
    with pytest.raises(FattrTypeError, match="deeplift: this method rewrites"):
        fattr.deeplift(fattr.per_example(lambda params, x: x))


@pytest.mark.parametrize("baseline", [torch.zeros(3, 5), torch.zeros(4, 2), "zero"])
def test_deeplift_baseline_must_match_x(baseline):
    f, params = fattr.functional(mlp())
    x = torch.randn(4, 5, dtype=torch.float64)
    with pytest.raises(FattrError, match="deeplift: baseline"):
        fattr.deeplift(f)(params, x, 0, baseline=baseline)


@pytest.mark.parametrize("baselines", [torch.zeros(2, 4), torch.zeros(0, 5), torch.zeros(5)])
def test_deeplift_shap_baselines_must_be_a_distribution_like_x(baselines):
    f, params = fattr.functional(mlp())
    x = torch.randn(4, 5, dtype=torch.float64)
    with pytest.raises(FattrError, match=r"deeplift_shap: baselines must be a distribution of "
                                         r"shape \(N, \*\(5,\)\)"):
        fattr.deeplift_shap(f)(params, x, 0, baselines=baselines)


def test_bad_configuration():
    f, _ = fattr.functional(mlp())
    for method in (fattr.guided_backprop, fattr.deconvnet, fattr.rectgrad):
        with pytest.raises(FattrError, match="mode must be 'function'"):
            method(f, mode="hooks")
    for eps in (0.0, -1.0, "1e-10", True):
        with pytest.raises(FattrError, match="deeplift: eps must be a positive number"):
            fattr.deeplift(f, eps=eps)
    with pytest.raises(FattrError, match="deeplift_shap: batch_size must be at least 2"):
        fattr.deeplift_shap(f, batch_size=1)
    with pytest.raises(FattrError, match="deeplift_shap: batch_size must be a positive int"):
        fattr.deeplift_shap(f, batch_size=0)


def test_training_mode_is_refused():
    net = small_cnn().train()
    f, params = fattr.functional(net)
    with pytest.raises(FattrError, match=r"guided_backprop: '1' \(BatchNorm2d\) is in training"):
        fattr.guided_backprop(f)(params, torch.randn(2, 1, 8, 8, dtype=torch.float64), 0)


def test_empty_batch_and_dtype_device():
    f, params = fattr.functional(mlp())
    for make, kw in ALL.values():
        kw = {k: v for k, v in kw.items() if k == "baseline"}
        assert make(f)(params, torch.zeros(0, 5, dtype=torch.float64), 0, **kw).shape == (0, 5)
        out = make(f)(params, torch.randn(2, 5, dtype=torch.float64), 0, **kw)
        assert out.dtype == torch.float64 and out.shape == (2, 5)


def test_float32_models():
    net = resnet18().float()
    f, params = fattr.functional(net)
    x = torch.randn(2, 3, 32, 32)
    a = fattr.deeplift(f)(params, x, 0)
    assert a.dtype == torch.float32
    assert fattr.completeness_gap(f, params, x, a, 0).abs().max() < 1e-3


# fused modules, nothing to act on, float16 ---------------------------------------------------

class Recurrent(nn.Module):
    """A sequence model (B, T, 5) -> (B, 3) around a fused recurrent or attention module."""

    def __init__(self, kind: str):
        super().__init__()
        torch.manual_seed(0)
        self.kind = kind
        self.core = {"lstm": lambda: nn.LSTM(5, 6, batch_first=True),
                     "gru": lambda: nn.GRU(5, 6, batch_first=True),
                     "rnn_relu": lambda: nn.RNN(5, 6, nonlinearity="relu", batch_first=True),
                     "attention": lambda: nn.MultiheadAttention(5, 1, batch_first=True)}[kind]()
        self.head = nn.Linear(6 if kind != "attention" else 5, 3)

    def forward(self, x):
        h = self.core(x, x, x)[0] if self.kind == "attention" else self.core(x)[0]
        return self.head(torch.relu(h[:, -1]))


@pytest.mark.parametrize(("kind", "inside"), [("lstm", "Sigmoid and Tanh"),
                                              ("gru", "Sigmoid and Tanh"),
                                              ("rnn_relu", "ReLU"), ("attention", "Softmax")])
@pytest.mark.parametrize("method", ["deeplift", "deeplift_shap", "layer_deeplift"])
def test_deeplift_refuses_fused_modules_naming_them(kind, inside, method):
    net = Recurrent(kind).double().eval()
    before = state_snapshot(net)
    f, _ = fattr.functional(net)
    make = {"deeplift": fattr.deeplift, "deeplift_shap": fattr.deeplift_shap,
            "layer_deeplift": lambda g: fattr.layer_deeplift(g, "head")}[method]
    with pytest.raises(FattrError, match=rf"{method}: 'core' \(\w+\) computes {inside} inside "
                                         "one fused kernel, which the rule cannot reach"):
        make(f)
    assert_unchanged(net, before)


def test_sign_rules_refuse_a_fused_relu_and_pass_other_fused_modules():
    f, params = fattr.functional(Recurrent("rnn_relu").double().eval())
    with pytest.raises(FattrError, match=r"guided_backprop: 'core' \(RNN\) computes ReLU"):
        fattr.guided_backprop(f)
    # an LSTM has no ReLU inside: guided backprop acts on the ReLU after it
    g, params = fattr.functional(Recurrent("lstm").double().eval())
    x = torch.randn(2, 4, 5, dtype=torch.float64)
    assert fattr.guided_backprop(g)(params, x, 1).shape == x.shape


class Gelu(nn.Module):
    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.a, self.b = nn.Linear(5, 8), nn.Linear(8, 3)

    def forward(self, x):
        return self.b(nn.functional.gelu(self.a(x)))


@pytest.mark.parametrize("method", SIGN_METHODS, ids=["guided", "deconv", "rectgrad"])
@pytest.mark.parametrize("mode", ["function", "hook"])
def test_sign_rules_with_nothing_to_act_on_say_so(method, mode):
    net = Gelu().double().eval()  # GELU only, as a ViT: the rule would be the plain gradient
    before = state_snapshot(net)
    f, params = fattr.functional(net)
    with pytest.raises(FattrError, match=r"\w+: the model has no ReLU \(module or functional "
                                         r"call\) for the rule to act on, so the result would "
                                         "be the plain gradient"):
        method(f, mode=mode)(params, torch.randn(2, 5, dtype=torch.float64), 0)
    assert_unchanged(net, before)


def test_float16_deeplift_is_finite():
    # float16 rounds the default eps 1e-10 to zero: equal pairs (a ReLU off in both halves, a
    # reference equal to x) gave 0 / 0 = NaN everywhere; eps is now at least float16's tiny
    net = mlp().half()
    f, params = fattr.functional(net)
    x = torch.randn(4, 5).half()
    reference = fattr.deeplift(fattr.functional(mlp().float())[0])(
        {k: v.float() for k, v in params.items()}, x.float(), 1, baseline=0.0)
    results = {
        "deeplift": fattr.deeplift(f)(params, x, 1, baseline=0.0),
        "deeplift_shap": fattr.deeplift_shap(f)(params, x, 1,
                                                baselines=torch.zeros(2, 5).half()),
        "layer_deeplift": fattr.layer_deeplift(f, "0")(params, x, 1, baseline=0.0),
    }
    for name, a in results.items():
        assert a.dtype == torch.float16 and torch.isfinite(a).all(), name
    torch.testing.assert_close(results["deeplift"].float(), reference, rtol=2e-2, atol=2e-3)
    same = fattr.deeplift(f)(params, x, 1, baseline=x)  # x equals its reference everywhere
    assert torch.isfinite(same).all() and same.abs().max() == 0


def test_deeplift_rule_refuses_a_negative_eps():
    for eps in (-1e-10, 0.0):
        with pytest.raises(FattrError, match="deeplift_rule: eps must be a positive number"):
            fattr.rules.deeplift_rule(eps)
