"""Layer methods on tuple inputs, layers that take or return several tensors, and the layer's
INPUT (attribute_to_input): parity with captum 0.9 (float64)."""

from __future__ import annotations

import captum.attr as ca
import pytest
import torch

import fattr
from tests.multi_input.models import close, multi_input, multi_layer, seeded, three_inputs

TARGET = torch.tensor([0, 1, 1, 0])


def x_and_add():
    return three_inputs(seed=21)[:2]


@pytest.mark.parametrize("to_input", [False, True])
def test_layer_methods_on_a_layer_that_takes_and_returns_two_tensors(to_input):
    """`multi_relu` takes two tensors and returns a tuple of two: attributions come back as a
    tuple, one per tensor, never just the first."""
    net = multi_layer(multi_input_module=True)
    f, params = fattr.functional(net)
    x, add = x_and_add()
    kwargs = dict(attribute_to_layer_input=to_input)
    lig = fattr.layer_integrated_gradients(f, "multi_relu", steps=16, attribute_to_input=to_input)
    ours = lig(params, x, TARGET, baseline=0.5, model_kwargs={"add_input": add})
    theirs = ca.LayerIntegratedGradients(net, net.multi_relu).attribute(
        x, baselines=0.5, target=TARGET, n_steps=16, additional_forward_args=(add,), **kwargs)
    close(ours, tuple(theirs), 1e-6)
    cond = fattr.layer_conductance(f, "multi_relu", steps=16, attribute_to_input=to_input)
    theirs = ca.LayerConductance(net, net.multi_relu).attribute(
        x, target=TARGET, n_steps=16, additional_forward_args=(add,), **kwargs)
    close(cond(params, x, TARGET, model_kwargs={"add_input": add}), tuple(theirs), 1e-6)
    act = fattr.layer_activation(f, "multi_relu", attribute_to_input=to_input)
    theirs = ca.LayerActivation(net, net.multi_relu).attribute(
        x, additional_forward_args=(add,), **kwargs)
    close(act(params, x, model_kwargs={"add_input": add}), tuple(theirs), 1e-12)
    gxa = fattr.layer_gradient_x_activation(f, "multi_relu", attribute_to_input=to_input)
    theirs = ca.LayerGradientXActivation(net, net.multi_relu).attribute(
        x, target=TARGET, additional_forward_args=(add,), **kwargs)
    close(gxa(params, x, TARGET, model_kwargs={"add_input": add}), tuple(theirs), 1e-12)


def test_layer_input_that_is_the_model_input():
    """linear0's input is x itself (no module produced it): attribute_to_input still works."""
    net = multi_layer()
    f, params = fattr.functional(net)
    x, _ = x_and_add()
    ours = fattr.layer_integrated_gradients(f, "linear0", steps=10, attribute_to_input=True)(
        params, x, TARGET)
    theirs = ca.LayerIntegratedGradients(net, net.linear0).attribute(
        x, target=TARGET, n_steps=10, attribute_to_layer_input=True)
    close(ours, (theirs,), 1e-6)
    torch.testing.assert_close(ours[0], fattr.integrated_gradients(f, steps=10)(params, x, TARGET))


def test_layer_methods_with_tuple_model_inputs_and_model_args():
    net = multi_input()
    f, params = fattr.functional(net)
    xs = three_inputs(seed=22)
    layer = "model.linear1"
    for batch_size in (None, 5):
        lig = fattr.layer_integrated_gradients(f, layer, steps=12, batch_size=batch_size)
        ours = lig(params, xs, TARGET, baseline=(0.0, 0.5, -0.5), model_args=(2,))
        theirs = ca.LayerIntegratedGradients(net, net.model.linear1).attribute(
            xs, baselines=(0.0, 0.5, -0.5), target=TARGET, n_steps=12,
            additional_forward_args=(2,), internal_batch_size=batch_size)
        torch.testing.assert_close(ours, theirs, rtol=1e-6, atol=1e-7)
    cond = fattr.layer_conductance(f, layer, steps=12)(params, xs, TARGET, model_args=(2,))
    theirs = ca.LayerConductance(net, net.model.linear1).attribute(
        xs, target=TARGET, n_steps=12, additional_forward_args=(2,))
    torch.testing.assert_close(cond, theirs, rtol=1e-6, atol=1e-7)
    ii = fattr.internal_influence(f, layer, steps=12)(params, xs, TARGET, model_args=(2,))
    theirs = ca.InternalInfluence(net, net.model.linear1).attribute(
        xs, target=TARGET, n_steps=12, additional_forward_args=(2,))
    torch.testing.assert_close(ii, theirs, rtol=1e-6, atol=1e-7)
    dl = fattr.layer_deeplift(f, "model.relu")(params, xs, TARGET, model_args=(2,))
    theirs = ca.LayerDeepLift(net, net.model.relu).attribute(
        xs, target=TARGET, additional_forward_args=(2,))
    torch.testing.assert_close(dl, theirs, rtol=1e-10, atol=1e-12)
    abl = fattr.layer_feature_ablation(f, layer)(params, xs, TARGET, model_args=(2,))
    theirs = ca.LayerFeatureAblation(net, net.model.linear1).attribute(
        xs, target=TARGET, additional_forward_args=(2,))
    torch.testing.assert_close(abl, theirs, rtol=1e-10, atol=1e-12)
    nc = fattr.neuron_conductance(f, layer, neuron=1, steps=12, method="riemann_right")(
        params, xs, TARGET, model_args=(2,))
    theirs = ca.NeuronConductance(net, net.model.linear1).attribute(
        xs, neuron_selector=1, target=TARGET, n_steps=12, method="riemann_right",
        additional_forward_args=(2,))
    close(nc, theirs, 1e-6)


def test_layer_gradient_shap_tuple_distributions_on_a_linear_prefix():
    """After the last nonlinearity the output is linear in the layer, so the layer gradient is
    the same at every point and LayerGradientShap is exact whatever the draws."""
    net = multi_input()
    f, params = fattr.functional(net)
    xs = three_inputs(seed=23)
    pools = tuple(torch.randn(1, 3, dtype=torch.float64, generator=seeded(i)) for i in range(3))
    ours = fattr.layer_gradient_shap(f, "model.relu", samples=4)(
        params, xs, TARGET, baselines=pools, generator=seeded(1), model_args=(1,))
    theirs = ca.LayerGradientShap(net, net.model.relu).attribute(
        xs, baselines=pools, target=TARGET, n_samples=4, additional_forward_args=(1,))
    torch.testing.assert_close(ours, theirs, rtol=1e-10, atol=1e-12)
    assert ours.abs().sum() > 0


def test_cams_take_the_size_of_the_first_input():
    class Fuse(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = torch.nn.Conv2d(1, 4, 3, padding=1)
            self.head = torch.nn.Linear(4 + 2, 3)

        def forward(self, image, table):
            a = self.conv(image).relu()
            return self.head(torch.cat([a.mean((2, 3)), table], 1))

    torch.manual_seed(0)
    net = Fuse().double().eval()
    f, params = fattr.functional(net)
    image = torch.randn(3, 1, 6, 6, dtype=torch.float64, generator=seeded(1))
    table = torch.randn(3, 2, dtype=torch.float64, generator=seeded(2))
    target = torch.tensor([0, 2, 1])
    for method in ("gradcam", "scorecam", "ablationcam", "layercam"):
        cam = getattr(fattr, method)(f, "conv")(params, (image, table), target)
        assert cam.shape == (3, 1, 6, 6), method
        alone = getattr(fattr, method)(f, "conv")(params, image, target, model_args=(table,))
        torch.testing.assert_close(cam, alone)
