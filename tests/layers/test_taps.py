"""Layer taps and the layer methods on them: parity with captum, composition, reliability."""

from __future__ import annotations

from collections import OrderedDict

import pytest
import torch
from torch import nn
from torch.func import grad, vmap

import fattr
from fattr.core.call import prepare
from fattr.core.model import as_model
from fattr.layers.taps import Tap
from tests.conftest import assert_unchanged, resnet18, small_cnn, state_snapshot


@pytest.fixture
def cnn():
    net = small_cnn()
    f, params = fattr.functional(net)
    return net, f, params, torch.randn(3, 1, 8, 8, dtype=torch.float64)


@pytest.mark.parametrize("layer", ["1", "4", "8"])  # "1": BatchNorm before an in-place ReLU
def test_captum_layer_activation_and_gradient_x_activation(cnn, layer):
    from captum.attr import LayerActivation, LayerGradientXActivation

    net, f, params, x = cnn
    module = net.get_submodule(layer)
    torch.testing.assert_close(fattr.layer_activation(f, layer)(params, x),
                               LayerActivation(net, module).attribute(x))
    expected = LayerGradientXActivation(net, module).attribute(x, target=[0, 3, 1])
    got = fattr.layer_gradient_x_activation(f, layer)(params, x, [0, 3, 1])
    torch.testing.assert_close(got, expected, rtol=1e-10, atol=1e-12)
    assert got.abs().max() > 0


def test_activation_is_not_clobbered_by_a_later_in_place_op(cnn):
    net, f, params, x = cnn
    acts = fattr.layer_activation(f, "1")(params, x)  # net[2] is ReLU(inplace=True)
    torch.testing.assert_close(acts, net[:2](x))
    assert (acts < 0).any()


def test_resnet_block_with_in_place_residual_add():
    from captum.attr import LayerGradientXActivation

    net = resnet18().double()
    f, params = fattr.functional(net)
    x = torch.randn(2, 3, 32, 32, dtype=torch.float64)
    layer = "layer2.0.bn2"  # followed by `out += identity` and an in-place ReLU
    expected = LayerGradientXActivation(net, net.get_submodule(layer)).attribute(x, target=[1, 5])
    got = fattr.layer_gradient_x_activation(f, layer)(params, x, [1, 5])
    torch.testing.assert_close(got, expected, rtol=1e-10, atol=1e-12)


def test_to_layer_explains_a_neuron_like_captum(cnn):
    from captum.attr import NeuronGradient

    net, f, params, x = cnn
    expected = NeuronGradient(net, net[4]).attribute(x, neuron_selector=(2, 1, 3))
    g = fattr.to_layer(f, "4")
    torch.testing.assert_close(fattr.saliency(g, abs=False)(params, x, (2, 1, 3)), expected)
    flat = fattr.to_layer(f, net[4], flatten=True)
    index = 2 * 16 + 1 * 4 + 3
    torch.testing.assert_close(fattr.saliency(flat, abs=False)(params, x, index), expected)
    per_example = fattr.to_layer(fattr.per_example(f), "4")
    torch.testing.assert_close(per_example(params, x[0]), g(params, x)[0])


def test_read_runs_only_up_to_the_layer():
    class Boom(nn.Module):
        def forward(self, x):
            raise RuntimeError("the head must not run")

    net = nn.Sequential(nn.Linear(3, 4), nn.Tanh(), Boom())
    f, params = fattr.functional(net)
    model = as_model(f, None, "test")
    tap = Tap(model, "1", "test")
    x = torch.randn(2, 3)
    call = prepare(model, x, None)
    torch.testing.assert_close(tap.read(params, call, call.inputs)[0], net[:2](x))
    assert all(not m._forward_hooks for m in net.modules())


def test_gradients_at_given_values_and_several_layers(cnn):
    """`at=` replaces the layer outputs; the gradient is the suffix's gradient there."""
    net, f, params, x = cnn
    model = as_model(f, None, "test")
    call = prepare(model, x, torch.tensor([0, 3, 1]))
    tap = Tap(model, ["4", "7"], "test")
    a4 = net[:5](x)
    values = [a4 * 0.5, net[5:8](a4 * 0.5)]
    tapped = tap.gradients(params, call, call.inputs, at=values)
    point = values[0].detach().clone().requires_grad_()
    net[5:](point)[torch.arange(3), torch.tensor([0, 3, 1])].sum().backward()
    torch.testing.assert_close(tapped.gradients[0], torch.zeros_like(point))  # replaced later
    tap4 = Tap(model, "4", "test")
    torch.testing.assert_close(
        tap4.gradients(params, call, call.inputs, at=[values[0]]).gradients[0], point.grad)
    both = tap.gradients(params, call, call.inputs, input=True)
    gx = grad(lambda v: f(params, v)[torch.arange(3), torch.tensor([0, 3, 1])].sum())(x)
    torch.testing.assert_close(both.input_gradient[0], gx)
    torch.testing.assert_close(both.activations[1], net[:8](x))
    with pytest.raises(ValueError, match=r"value put at layer '4' has shape \(1, 6, 4, 4\)"):
        tap4.gradients(params, call, call.inputs, at=[values[0][:1]])


def test_layer_method_composition(cnn):
    _, f, params, x = cnn
    attr = fattr.layer_gradient_x_activation(f, "4")
    targets = torch.tensor([[0, 3, 1], [2, 2, 0]])
    mapped = vmap(attr, in_dims=(None, None, 0))(params, x, targets)
    for k in range(2):
        torch.testing.assert_close(mapped[k], attr(params, x, targets[k]))
    per_example = vmap(fattr.layer_gradient_x_activation(fattr.per_example(f), "4"),
                       in_dims=(None, 0, 0))(params, x, targets[0])
    torch.testing.assert_close(per_example, mapped[0])
    g = grad(lambda p: attr(p, x, targets[0]).square().sum())(
        {k: v for k, v in params.items() if k.endswith(("weight", "bias"))})
    assert sum(v.abs().sum() for v in g.values()) > 0


def test_token_ids_through_an_embedding():
    net = nn.Sequential(OrderedDict(emb=nn.Embedding(10, 4), flat=nn.Flatten(),
                                    fc=nn.Linear(12, 2))).double().eval()
    f, params = fattr.functional(net)
    ids = torch.tensor([[1, 2, 3], [4, 5, 6]])
    a = fattr.layer_gradient_x_activation(f, "emb")(params, ids, 1)
    emb = net.emb(ids)
    torch.testing.assert_close(a, emb * net.fc.weight[1].reshape(3, 4))
    assert fattr.layer_activation(f, "emb")(params, ids).shape == (2, 3, 4)


def test_tuple_output_layer_is_attributed_tensor_by_tensor():
    class Pair(nn.Module):
        def __init__(self):
            super().__init__()
            self.lin = nn.Linear(3, 3)

        def forward(self, x):
            return self.lin(x), "extra"

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.pair = Pair()
            self.head = nn.Linear(3, 2)

        def forward(self, x):
            h, extra = self.pair(x)
            assert extra == "extra"
            return self.head(torch.tanh(h))

    net = Net().double().eval()
    f, params = fattr.functional(net)
    x = torch.randn(4, 3, dtype=torch.float64)
    h = net.pair.lin(x)
    (a,) = fattr.layer_gradient_x_activation(f, "pair")(params, x, 0)  # a tuple, like the output
    torch.testing.assert_close(a, h * (1 - torch.tanh(h) ** 2) * net.head.weight[0])


def test_errors_and_no_hooks_left(cnn):
    net, f, params, x = cnn
    before = state_snapshot(net)
    with pytest.raises(ValueError, match=r"no layer named '44'.*Did you mean '4'"):
        fattr.layer_activation(f, "44")
    with pytest.raises(ValueError, match="out of range"):
        fattr.layer_gradient_x_activation(f, "4")(params, x, 7)
    assert_unchanged(net, before)
    with pytest.raises(ValueError, match="flatten must be True or False"):
        fattr.to_layer(f, "4", flatten=1)

    class Skip(nn.Module):
        def __init__(self):
            super().__init__()
            self.used, self.unused = nn.Linear(2, 2), nn.Linear(2, 2)

        def forward(self, x):
            return self.used(x)

    g, p = fattr.functional(Skip())
    with pytest.raises(ValueError, match="layer 'unused' did not run"):
        fattr.layer_activation(g, "unused")(p, torch.randn(1, 2))
    class Dict(nn.Module):
        def forward(self, x):
            return {"out": x}

    class Outer(nn.Module):
        def __init__(self):
            super().__init__()
            self.inner = Dict()

        def forward(self, x):
            return self.inner(x)["out"]

    h, q = fattr.functional(Outer())
    with pytest.raises(ValueError, match="layer 'inner' has no tensor output to tap"):
        fattr.layer_activation(h, "inner")(q, torch.randn(1, 2))


def test_empty_batch_layer_methods(cnn):
    _, f, params, x = cnn
    assert fattr.layer_activation(f, "4")(params, x[:0]).shape == (0, 6, 4, 4)
    assert fattr.layer_gradient_x_activation(f, "4")(params, x[:0], 0).shape == (0, 6, 4, 4)


def test_tokens_to_grid():
    tokens = torch.arange(2 * 17 * 3.0).reshape(2, 17, 3)
    grid = fattr.tokens_to_grid(1)(tokens)
    assert grid.shape == (2, 3, 4, 4)
    torch.testing.assert_close(grid[1, 2, 1, 3], tokens[1, 1 + 4 + 3, 2])
    rect = fattr.tokens_to_grid(2, grid=(3, 5))(torch.randn(2, 17, 3))
    assert rect.shape == (2, 3, 3, 5)
    hwc = torch.randn(2, 4, 5, 3)
    torch.testing.assert_close(fattr.tokens_to_grid(layout="bhwc")(hwc), hwc.permute(0, 3, 1, 2))
    with pytest.raises(ValueError, match="16 tokens after dropping 0 prefix token"):
        fattr.tokens_to_grid(0, grid=(3, 5))(torch.randn(2, 16, 3))
    with pytest.raises(ValueError, match="18 tokens .* do not fill a 4x4 grid"):
        fattr.tokens_to_grid(1)(torch.randn(2, 19, 3))
    with pytest.raises(ValueError, match=r"expected a \(B, N, C\) layer output"):
        fattr.tokens_to_grid(1)(hwc)
    with pytest.raises(ValueError, match=r"expected a \(B, H, W, C\)"):
        fattr.tokens_to_grid(layout="bhwc")(tokens)
    with pytest.raises(ValueError, match="layout must be one of bnc, bhwc"):
        fattr.tokens_to_grid(layout="nchw")
    with pytest.raises(ValueError, match="prefix_tokens must be an int >= 0"):
        fattr.tokens_to_grid(-1)
    with pytest.raises(ValueError, match="grid must be"):
        fattr.tokens_to_grid(grid=(4,))


def test_to_layer_int_target_is_the_flattened_neuron_index():
    """API.md: `to_layer` targets pick a neuron, an int over the flattened neuron index or a
    tuple over the layer's axes; both name the same neuron."""
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Conv2d(1, 3, 3, padding=1), torch.nn.ReLU(),
                              torch.nn.Conv2d(3, 2, 3, padding=1)).double().eval()
    f, params = fattr.functional(net)
    g = fattr.to_layer(f, "1")
    x = torch.randn(2, 1, 5, 5, dtype=torch.float64)
    by_tuple = fattr.saliency(g, abs=False)(params, x, (2, 3, 4))
    by_int = fattr.saliency(g, abs=False)(params, x, 2 * 25 + 3 * 5 + 4)
    torch.testing.assert_close(by_int, by_tuple)
    assert by_int.abs().sum() > 0
    with pytest.raises(fattr.FattrError, match="target 75 is out of range"):
        fattr.saliency(g)(params, x, 75)
    # an ordinary model keeps out[:, t] and refuses a non-scalar selection
    with pytest.raises(fattr.FattrError, match="one scalar per example"):
        fattr.saliency(f)(params, x, 1)
