"""Reliability: every unsupported module, call or argument raises an error that names it."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import fattr
from fattr.lrp import Epsilon, Flat, Pass, first
from tests.conftest import assert_unchanged, state_snapshot
from tests.lrp.models import conv_net, relu_mlp


class WithModule(nn.Module):
    def __init__(self, middle: nn.Module):
        super().__init__()
        self.inp, self.middle, self.out = nn.Linear(4, 8), middle, nn.Linear(8, 2)

    def forward(self, x):
        return self.out(torch.relu(self.middle(self.inp(x))))


class Attention(nn.Module):
    def __init__(self):
        super().__init__()
        self.attn = nn.MultiheadAttention(8, 2, batch_first=True)
        self.out = nn.Linear(8, 2)

    def forward(self, x):
        return self.out(self.attn(x, x, x)[0].mean(1))


class Square(nn.Module):
    def forward(self, x):
        return x * x


class Scaled(nn.Module):
    def __init__(self):
        super().__init__()
        self.scale = nn.Parameter(torch.ones(8))
        self.inner = nn.Linear(8, 8)

    def forward(self, x):
        return self.inner(x) * self.scale


class Calls(nn.Module):
    def __init__(self, call: str):
        super().__init__()
        self.call, self.inp, self.out = call, nn.Linear(4, 8), nn.Linear(8, 2)

    def forward(self, x):
        h = self.inp(x)
        if self.call == "matmul":
            h = h @ torch.eye(8)
        elif self.call == "product":
            h = h * h.flip(-1)
        elif self.call == "swish":
            h = h * torch.sigmoid(h)
        elif self.call == "silu":
            h = nn.functional.silu(h)
        elif self.call == "softmax":
            return torch.softmax(self.out(h), -1)
        elif self.call == "hardswish":
            h = nn.functional.hardswish(h)
        elif self.call == "linear":
            h = nn.functional.linear(h, self.out.weight.T.repeat(1, 4)[:, :8].T)
        return self.out(h)


@pytest.mark.parametrize(("net", "match"), [
    (WithModule(nn.RMSNorm(8)), r"no LRP rule for 'middle' \(RMSNorm\)"),
    (WithModule(nn.GroupNorm(2, 8)), r"'middle' \(GroupNorm\)"),
    (WithModule(nn.Softmax(-1)), r"'middle' \(Softmax\)"),
    (WithModule(nn.LSTM(8, 8)), r"'middle' \(LSTM\)"),
    (Attention(), r"'attn' \(MultiheadAttention\)"),
])
def test_unsupported_modules_are_named_at_construction(net, match):
    f, _ = fattr.functional(net.eval())
    with pytest.raises(fattr.FattrError, match=match):
        fattr.lrp(f)


def test_a_parameter_free_module_is_checked_when_it_runs():
    net = WithModule(Square()).eval()  # x * x: no rule, seen only when the forward runs
    f, params = fattr.functional(net)
    attr = fattr.lrp(f)
    with pytest.raises(fattr.FattrError, match="multiplies or divides two tensors of one shape"):
        attr(params, torch.randn(2, 4), 0)


def test_a_sigmoid_gate_is_a_constant_for_the_rule():
    # x * sigmoid(x): the sigmoid's output gates x (as in squeeze-and-excitation), so all
    # relevance goes to x: the same relevance as SiLU's Pass rule
    x = torch.randn(3, 4, dtype=torch.float64)
    results = []
    for call in ("swish", "silu"):
        torch.manual_seed(0)
        net = Calls(call).double().eval()
        f, params = fattr.functional(net)
        results.append(fattr.lrp(f, "epsilon")(params, x, 1))
    torch.testing.assert_close(results[0], results[1])


def test_a_learned_scale_passes_relevance():
    # y = inner(x) * scale with a parameter `scale`: a one-input linear map, so the relevance
    # of y reaches inner's output unchanged (Pass), as for a scaling by a number
    net = WithModule(Scaled()).double().eval()
    with torch.no_grad():
        net.middle.scale.uniform_(0.5, 2.0)
    f, params = fattr.functional(net)
    x = torch.randn(3, 4, dtype=torch.float64)
    ours = fattr.lrp(f, "epsilon", epsilon=0.0, stabilizer=0.0)(params, x, 1)
    gxi = fattr.input_x_gradient(f)(params, x, 1)  # LRP-0 on a ReLU net: Gradient x Input
    torch.testing.assert_close(ours, gxi)


@pytest.mark.parametrize(("call", "match"), [
    ("matmul", "calls .*matmul"), ("product", "multiplies or divides two tensors"),
    ("softmax", "calls .*softmax"), ("linear", "calls .*linear"),
    ("hardswish", "calls .*hardswish")])
def test_functional_calls_without_a_rule_are_refused(call, match):
    net = Calls(call).eval()
    before = state_snapshot(net)
    f, params = fattr.functional(net)
    attr = fattr.lrp(f, "epsilon")  # calls are seen when the forward runs
    with pytest.raises(fattr.FattrError, match=match):
        attr(params, torch.randn(2, 4), 0)
    assert_unchanged(net, before)


def test_a_module_mapped_to_none_keeps_its_plain_gradient():
    net = WithModule(nn.LayerNorm(8)).double().eval()
    before = state_snapshot(net)
    f, params = fattr.functional(net)
    x = torch.randn(3, 4, dtype=torch.float64)
    plain = fattr.lrp(f, {nn.LayerNorm: None, nn.Linear: Epsilon()})(params, x, 1)
    # a named composite extended by a mapping: a composite is a dict
    passed = fattr.lrp(f, {nn.LayerNorm: Pass(), **fattr.lrp.COMPOSITES["epsilon"]()})
    passed = passed(params, x, 1)
    assert plain.shape == x.shape and (plain - passed).abs().max() > 1e-6
    # Pass: the LayerNorm hands its output relevance R_h down unchanged, and Epsilon on `inp`
    # redistributes it: R_x = x * W^T (R_h / stab(z)), z = inp(x)
    top, top_params = fattr.functional(nn.Sequential(nn.ReLU(), net.out).eval())
    z = net.inp(x).detach()
    r_h = fattr.lrp(top, "epsilon")(top_params, net.middle(z).detach(), 1)
    expected = x * ((r_h / (z + 1e-6 * torch.where(z >= 0, 1.0, -1.0))) @ net.inp.weight.detach())
    torch.testing.assert_close(passed, expected)
    assert_unchanged(net, before)


def test_composite_without_a_rule_for_a_layer_names_it():
    f, _ = fattr.functional(conv_net())
    with pytest.raises(fattr.FattrError, match=r"no LRP rule for '0' \(Conv2d\)"):
        fattr.lrp(f, {nn.Linear: Epsilon()})


def test_first_only_key_with_several_layers_raises_at_the_call():
    net = relu_mlp()
    f, params = fattr.functional(net)
    attr = fattr.lrp(f, {first(nn.Linear): Flat()})
    with pytest.raises(fattr.FattrError, match=r"'2' \(Linear\) matches only a first\(...\) key"):
        attr(params, torch.randn(2, 6, dtype=torch.float64), 0)


def test_pass_on_a_shape_changing_module_raises():
    net = nn.Sequential(nn.Conv2d(1, 2, 3), nn.Flatten(), nn.Linear(8, 2)).eval()
    f, params = fattr.functional(net)
    attr = fattr.lrp(f, {nn.Flatten: Pass(), nn.Conv2d: Epsilon(), nn.Linear: Epsilon()})
    with pytest.raises(fattr.FattrError, match=r"Pass rule on '1' \(Flatten\)"):
        attr(params, torch.randn(2, 1, 4, 4), 0)


def test_rules_on_containers_are_refused():
    f, _ = fattr.functional(WithModule(nn.Sequential(nn.Linear(8, 8), nn.ReLU())).eval())
    with pytest.raises(fattr.FattrError, match="'middle' .*submodules"):
        fattr.lrp(f, {"middle": Epsilon(), nn.Linear: Epsilon()})


@pytest.mark.parametrize(("kwargs", "error", "match"), [
    ({"composite": "epsilon_plus_flatt"}, fattr.FattrError, "unknown composite 'epsilon_plus_fl"),
    ({"composite": "epsilon_plus", "gamma": 0.5}, fattr.FattrError, r"unknown rule param.*gamma"),
    ({"composite": "epsilon_gamma_box"}, fattr.FattrError, "needs the input's bounds"),
    ({"composite": "epsilon_gamma_box", "low": 0.0}, fattr.FattrError, "low= and high="),
    ({"composite": {nn.Linear: Epsilon()}, "epsilon": 0.1}, fattr.FattrError, "only apply to"),
    ({"composite": {1: Epsilon()}}, fattr.FattrTypeError, "composite key 1"),
    ({"composite": {nn.Linear: "epsilon"}}, fattr.FattrTypeError, "must be a rule"),
    ({"composite": 3}, fattr.FattrTypeError, "name .* or a mapping"),
    ({"canonize": "yes"}, fattr.FattrTypeError, "canonize must be True or False"),
    ({"composite": "epsilon", "epsilon": -1.0}, fattr.FattrError, "Epsilon"),
    ({"composite": "epsilon_plus", "stabilizer": "a"}, fattr.FattrError, "ZPlus"),
])
def test_bad_configuration_raises(kwargs, error, match):
    f, _ = fattr.functional(relu_mlp())
    with pytest.raises(error, match=match):
        fattr.lrp(f, **kwargs)


def test_first_needs_module_types():
    with pytest.raises(fattr.FattrTypeError, match="first"):
        first("conv")
    with pytest.raises(fattr.FattrTypeError, match="first"):
        first()


def test_model_must_come_from_functional():
    with pytest.raises(fattr.FattrTypeError, match="fattr.functional"):
        fattr.lrp(lambda params, x: x.sum(1))


def test_training_mode_and_bad_inputs_raise():
    net = conv_net()
    f, params = fattr.functional(net)
    attr = fattr.lrp(f)
    x = torch.randn(2, 2, 8, 8, dtype=torch.float64)
    net.train()
    with pytest.raises(fattr.FattrError, match="model.eval()"):
        attr(params, x, 0)
    net.eval()
    with pytest.raises(fattr.FattrError, match="NaN"):
        attr(params, x * float("nan"), 0)
    with pytest.raises(fattr.FattrError, match="floating-point"):
        attr(params, x.long(), 0)
    assert attr(params, x[:0], 0).shape == (0, 2, 8, 8)


class DictOutput(nn.Module):
    def __init__(self):
        super().__init__()
        self.net = nn.Linear(4, 3)

    def forward(self, x):
        return {"logits": self.net(x)}


def test_non_tensor_outputs_need_an_output_selector():
    f, params = fattr.functional(DictOutput().eval())
    x = torch.randn(2, 4)
    with pytest.raises(fattr.FattrError, match="output="):
        fattr.lrp(f)(params, x, 0)
    ours = fattr.lrp(f, "epsilon", output=lambda o: o["logits"])(params, x, 0)
    inner, inner_params = fattr.functional(f.module.net)
    expected = fattr.lrp(inner, "epsilon")(inner_params, x, 0)
    torch.testing.assert_close(ours, expected)


def test_a_composite_naming_a_missing_layer_is_refused():
    f, _ = fattr.functional(conv_net())
    with pytest.raises(fattr.FattrError, match=r"lrp: the composite maps the layer name "
                                               r"'features.0', which the model does not have"):
        fattr.lrp(f, {"features.0": Flat(), **fattr.lrp.COMPOSITES["epsilon"]()})
    fattr.lrp(f, {"0": Flat(), **fattr.lrp.COMPOSITES["epsilon"]()})  # an existing name


@pytest.mark.parametrize(("low", "high"), [(3.0, -3.0), (torch.tensor([0.0, 2.0]), 1.0)])
def test_zbox_bounds_must_be_ordered(low, high):
    with pytest.raises(fattr.FattrError, match="lrp: ZBox needs low <= high"):
        fattr.lrp.ZBox(low, high)
    f, _ = fattr.functional(conv_net())
    with pytest.raises(fattr.FattrError, match="lrp: ZBox needs low <= high"):
        fattr.lrp(f, "epsilon_gamma_box", low=low, high=high)


@pytest.mark.parametrize("rule", [fattr.lrp.AttnLRP, fattr.lrp.CPLRP, fattr.lrp.FrozenStd])
def test_transformer_rules_refuse_a_negative_epsilon(rule):
    with pytest.raises(fattr.FattrError, match=rf"lrp: {rule.__name__}\(epsilon=...\) must be "
                                               r"a number >= 0, got -1e-06"):
        rule(-1e-6)
    f, _ = fattr.functional(relu_mlp())
    with pytest.raises(fattr.FattrError, match="must be a number >= 0"):
        fattr.lrp(f, "attnlrp", epsilon=-1e-6)


class TwoInputs(nn.Module):
    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.inp, self.pair, self.out = nn.Linear(4, 6), nn.Bilinear(6, 6, 6), nn.Linear(6, 2)

    def forward(self, x):
        h = self.inp(x)
        return self.out(self.pair(h, h.flip(-1)))


def test_a_rule_on_a_module_with_two_inputs_is_refused_by_name():
    net = TwoInputs().eval()
    before = state_snapshot(net)
    f, params = fattr.functional(net)
    attr = fattr.lrp(f, {nn.Bilinear: Epsilon(), nn.Linear: Epsilon()})
    with pytest.raises(fattr.FattrError, match=r"lrp: the composite maps 'pair' \(Bilinear\) to "
                                               "Epsilon, a rule for layers of one input tensor, "
                                               "but the model calls it with 2 arguments"):
        attr(params, torch.randn(2, 4), 0)
    assert_unchanged(net, before)
