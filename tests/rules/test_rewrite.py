"""The rewrite engine: a new tree that shares parameters, with matched modules swapped in."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import fattr
from fattr.errors import FattrError, FattrTypeError
from fattr.rules.activation import RuleActivation
from fattr.rules.deconvnet import DECONV
from fattr.rules.guided_backprop import GUIDED
from fattr.rules.rewrite import RuleModule, copy_tree, rewrite
from tests.conftest import assert_unchanged, mlp, small_cnn, state_snapshot


class Tagged(nn.Module):
    """A stand-in replacement that remembers what it replaced."""

    def __init__(self, replaced: nn.Module, scale: float = 2.0):
        super().__init__()
        self.replaced, self.scale = type(replaced).__name__, scale

    def forward(self, x):
        return self.scale * x


class Functional(nn.Module):
    def __init__(self):
        super().__init__()
        self.a, self.b = nn.Linear(4, 6), nn.Linear(6, 2)

    def forward(self, x):
        return self.b(torch.tanh(self.a(x)))


def test_original_untouched_and_parameters_shared():
    net = small_cnn()
    before = state_snapshot(net)
    new = rewrite(net, {nn.ReLU: Tagged})
    assert_unchanged(net, before)
    assert [type(m) for m in net.modules()].count(nn.ReLU) == 2
    assert [type(m) for m in new.modules()].count(nn.ReLU) == 0
    assert [n for n, _ in new.named_parameters()] == [n for n, _ in net.named_parameters()]
    assert [n for n, _ in new.named_buffers()] == [n for n, _ in net.named_buffers()]
    for (_, p), (_, q) in zip(new.named_parameters(), net.named_parameters()):
        assert p is q
    for (_, p), (_, q) in zip(new.named_buffers(), net.named_buffers()):
        assert p is q
    assert new is not net and new[0] is not net[0]


def test_copy_tree_shares_tensors_not_nodes():
    net = mlp()
    clone = copy_tree(net)
    clone[1] = nn.Tanh()
    clone[0].register_forward_hook(lambda m, i, o: o * 0)
    assert isinstance(net[1], nn.ReLU) and not net[0]._forward_hooks
    assert clone[0].weight is net[0].weight


def test_inplace_activation_becomes_out_of_place_rule_module():
    net = nn.Sequential(nn.Linear(3, 4), nn.ReLU(inplace=True)).double()
    new = rewrite(net, GUIDED.module_rules())
    assert isinstance(new[1], RuleActivation)
    v = torch.randn(5, 4, dtype=torch.float64)
    kept = v.clone()
    out = new[1](v)
    assert torch.equal(v, kept) and torch.equal(out, v.relu())
    assert net[1].inplace is True


def test_user_hooks_fire_on_the_copy_and_copy_hooks_do_not_leak():
    net = mlp()
    seen = []
    net[0].register_forward_hook(lambda m, i, o: seen.append(o.shape))
    before = state_snapshot(net)
    new = rewrite(net, {nn.ReLU: Tagged})
    new[2].register_forward_hook(lambda m, i, o: o)
    new(torch.randn(2, 5, dtype=torch.float64))
    assert seen == [torch.Size([2, 8])]
    assert_unchanged(net, before)


@pytest.mark.parametrize("key", [nn.ReLU, (nn.ReLU, nn.Tanh), "1"])
def test_rule_keys(key):
    net = mlp()
    new = rewrite(net, {key: Tagged})
    replaced = [n for n, m in new.named_modules() if isinstance(m, Tagged)]
    assert replaced == (["1"] if key == "1" else ["1", "3"])


def test_callable_rules_and_first_match_wins():
    net = mlp()
    new = rewrite(net, lambda name, m: Tagged(m, 3.0) if name == "3" else None)
    assert [n for n, m in new.named_modules() if isinstance(m, Tagged)] == ["3"]
    new = rewrite(net, {"3": lambda m: Tagged(m, 5.0), nn.ReLU: Tagged})
    assert new[3].scale == 5.0 and new[1].scale == 2.0


def test_root_and_nested_dotted_names():
    net = nn.Sequential(nn.Sequential(nn.Linear(2, 2), nn.ReLU()), nn.ReLU())
    new = rewrite(net, {"0.1": Tagged})
    assert isinstance(new[0][1], Tagged) and isinstance(new[1], nn.ReLU)
    assert isinstance(rewrite(nn.ReLU(), {nn.ReLU: Tagged}), Tagged)


def test_function_routes_and_refuse_name_the_call():
    torch.manual_seed(1)
    net = Functional().double()
    x = torch.randn(3, 4, dtype=torch.float64)
    zeroed = rewrite(net, {}, functions={torch.tanh: lambda v: v * 0})
    assert torch.equal(zeroed(x), net.b(torch.zeros(3, 6, dtype=torch.float64)))
    refusing = rewrite(net, {}, refuse={torch.tanh: "some_method"})
    with pytest.raises(FattrError, match=r"some_method: the model calls .*tanh functionally"):
        refusing(x)
    assert torch.equal(net(x), net.b(torch.tanh(net.a(x))))  # the original is not routed


def test_rule_module_takes_over_parameters_under_the_same_names():
    class Doubled(RuleModule):
        def forward(self, x):
            return 2 * self.layer_call(x)

    net = mlp()
    new = rewrite(net, {"2": Doubled})
    assert [n for n, _ in new.named_parameters()] == [n for n, _ in net.named_parameters()]
    _f, params = fattr.functional(net)
    x = torch.randn(4, 5, dtype=torch.float64)
    weight = params["2.weight"].clone().requires_grad_()
    out = torch.func.functional_call(new, {**params, "2.weight": weight}, (x,))
    h = net[1](net[0](x))
    expected = net[4](net[3](2 * F.linear(h, weight, params["2.bias"])))
    torch.testing.assert_close(out, expected)
    assert torch.autograd.grad(out.sum(), weight)[0].abs().sum() > 0


def test_original_untouched_when_the_rewritten_call_raises():
    net = small_cnn()
    before = state_snapshot(net)
    new = rewrite(net, GUIDED.module_rules())
    with pytest.raises(RuntimeError):
        new(torch.randn(2, 3, 8, 8, dtype=torch.float64))  # wrong channel count
    assert_unchanged(net, before)


def test_rewritten_model_follows_the_users_module():
    net = mlp()
    f, params = fattr.functional(net)
    attr = fattr.guided_backprop(f)
    x = torch.randn(3, 5, dtype=torch.float64)
    first = attr(params, x, 0)
    net[1] = nn.Tanh()  # a change after the method was built is seen at the next call
    assert not torch.allclose(first, attr(params, x, 0))
    net[3] = nn.Tanh()  # no ReLU left: guided backprop would be the plain gradient
    with pytest.raises(FattrError, match="guided_backprop: the model has no ReLU"):
        attr(params, x, 0)


def test_bad_arguments():
    with pytest.raises(FattrTypeError, match="rewrite: expected an nn.Module"):
        rewrite(lambda x: x, {})
    with pytest.raises(FattrTypeError, match="rewrite: rules must be a mapping"):
        rewrite(mlp(), [nn.ReLU])
    with pytest.raises(FattrTypeError, match="rule key 3 is not a module type"):
        rewrite(mlp(), {3: Tagged})


def test_rule_asked_for_an_activation_it_does_not_cover():
    net = nn.Sequential(nn.Linear(3, 3), nn.GELU())
    with pytest.raises(FattrError, match="guided_backprop: this rule has no backward for GELU; "
                                         "it covers ReLU"):
        rewrite(net, {nn.GELU: GUIDED})
    with pytest.raises(FattrError, match="deconvnet: this rule has no backward for Tanh"):
        DECONV(nn.Tanh())
    assert isinstance(rewrite(net, {nn.Linear: nn.Identity, nn.ReLU: GUIDED})[0], nn.Identity)


def test_a_rewritten_model_gives_any_method_the_modified_gradient():
    from fattr.rules import GUIDED, rectgrad_rule

    net = small_cnn()
    x = torch.randn(3, 1, 8, 8, dtype=torch.float64)
    f, params = fattr.functional(net)
    guided, _ = fattr.functional(rewrite(net, {nn.ReLU: GUIDED}))
    torch.testing.assert_close(fattr.saliency(guided, abs=False)(params, x, 1),
                               fattr.guided_backprop(f)(params, x, 1))
    rect, _ = fattr.functional(rewrite(net, {nn.ReLU: rectgrad_rule(70.0)}))
    torch.testing.assert_close(fattr.input_x_gradient(rect)(params, x, 1),
                               fattr.rectgrad(f, percentile=70.0)(params, x, 1))
