"""fattr.explain: every method by name, the predicted class, default layers and token grids,
the saved figure; the registry's `complete` and `stochastic` columns checked on the way."""

from __future__ import annotations

import pytest
import torch
import torchvision
from PIL import Image

import fattr
from fattr.explain import Probe, build
from fattr.registry import METHODS
from fattr.run.demo import digits_cam_cnn, options


@pytest.fixture(scope="module")
def digits():
    torch.manual_seed(0)
    model = digits_cam_cnn(16).double().eval()
    x = torch.rand(3, 1, 16, 16, dtype=torch.float64)
    return model, x


def hooks(model):
    return sum(len(m._forward_hooks) + len(m._forward_pre_hooks) for m in model.modules())


@pytest.mark.parametrize("name", list(METHODS))
def test_every_method_by_name(digits, name):
    model, x = digits
    info = METHODS[name]
    kwargs = options(info, fattr.functional(model)[0], x, x[:2], 0, quick=True)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    a = fattr.explain(model, x, name, **kwargs)
    assert a.shape[0] == 3 and a.dtype == torch.float64 and torch.isfinite(a).all()
    if info.family in ("layer",):
        assert a.shape == (3, 16, 4, 4)        # the default layer, block3
    elif info.family in ("cam", "guided", "xrai"):
        assert a.shape in ((3, 1, 16, 16), x.shape)
    else:
        assert a.shape == x.shape
    assert hooks(model) == 0 and not model.training
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in before.items())
    if info.stochastic:  # the generator decides the draws
        again = fattr.explain(model, x, name, **{**kwargs, "generator":
                                                 torch.Generator().manual_seed(0)})
        other = fattr.explain(model, x, name, **{**kwargs, "generator":
                                                 torch.Generator().manual_seed(1)})
        assert torch.equal(a, again)
        # Smooth Grad-CAM++ averages layer gradients over noise, and block3's gradient is the
        # linear head's weights whatever the input: the draws cannot change it here
        assert torch.equal(a, other) == (name == "smooth_gradcam_plus_plus")


@pytest.mark.parametrize("name", [n for n, m in METHODS.items() if m.complete])
def test_complete_methods_sum_to_the_output_difference(digits, name):
    model, x = digits
    f, params = fattr.functional(model)
    target = torch.tensor([0, 3, 7])
    kwargs = {"generator": torch.Generator().manual_seed(0)} if METHODS[name].stochastic else {}
    if name == "adaptive_integrated_gradients":
        kwargs["tolerance"] = 1e-3
    elif METHODS[name].family == "path" or name == "layer_conductance":
        kwargs["steps"] = 256
    mask = torch.arange(16)[:, None] // 8 * 2 + torch.arange(16)[None, :] // 8   # 4 features
    if METHODS[name].family == "perturbation":
        kwargs["feature_mask"] = mask
    a = fattr.explain(model, x, name, target, **kwargs)
    if "feature_mask" in kwargs:  # each of a group's 64 pixels carries the group's value
        a = a / 64
    rise = (f(params, x) - f(params, torch.zeros_like(x)))[torch.arange(3), target]
    gap = (a.flatten(1).sum(1) - rise).abs()
    if name in ("integrated_gradients", "layer_conductance"):  # quadrature over ReLU kinks
        assert (gap <= 5e-3 * rise.abs() + 1e-4).all(), (gap, rise)
    elif name == "adaptive_integrated_gradients":  # within tolerance, or max_steps reached
        assert (gap <= 1e-3 * rise.abs() + 1e-4).all(), (gap, rise)
    else:  # exact up to float64 rounding
        assert (gap <= 1e-9 * rise.abs() + 1e-12).all(), (gap, rise)


def test_target_none_is_the_predicted_class_and_save_writes_a_figure(digits, tmp_path):
    model, x = digits
    labels = model(x).argmax(1)
    path = tmp_path / "maps" / "ig.png"
    a = fattr.explain(model, x, "integrated_gradients", steps=8, save=path)
    torch.testing.assert_close(a, fattr.explain(model, x, "integrated_gradients", labels,
                                                steps=8))
    with Image.open(path) as image:
        assert image.size[0] > 200


def test_options_are_routed_to_the_constructor_or_the_call(digits):
    model, x = digits
    f, params = fattr.functional(model)
    attr, call = build(f, params, x, "lrp", composite="epsilon", epsilon=0.5, baseline=None)
    assert call == {"baseline": None}
    attr, call = build(f, params, x, "integrated_gradients", steps=4, baseline=0.5)
    torch.testing.assert_close(attr(params, x, 1, **call), fattr.integrated_gradients(
        f, steps=4)(params, x, 1, baseline=0.5))
    cam = fattr.explain(model, x, "gradcam", 2, layer="block2")
    torch.testing.assert_close(cam, fattr.gradcam(f, "block2")(params, x, 2))


def test_errors_name_the_fix(digits):
    model, x = digits
    with pytest.raises(fattr.FattrError, match="unknown method 'gradcamm'. Did you mean "
                                               "'gradcam'"):
        fattr.explain(model, x, "gradcamm")
    with pytest.raises(fattr.FattrError, match="neuron_conductance needs neuron="):
        fattr.explain(model, x, "neuron_conductance")
    with pytest.raises(fattr.FattrError, match="no layer named 'block4'"):
        fattr.explain(model, x, "gradcam", layer="block4")
    assert hooks(model) == 0
    mlp = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(256, 3)).double()
    with pytest.raises(fattr.FattrError, match="no convolutional map .* Pass layer="):
        fattr.explain(mlp, x, "gradcam")
    with pytest.raises(fattr.FattrError, match=r"the model returned \(3, 1, 16, 16\)"):
        fattr.explain(torch.nn.Identity(), x, "saliency")


@pytest.mark.parametrize(("build_model", "size", "layer", "reshaped"), [
    (lambda: torchvision.models.resnet18(num_classes=4), 64, "layer4", False),
    (lambda: torchvision.models.mobilenet_v3_small(num_classes=4), 64, "features", False),
    (lambda: torchvision.models.VisionTransformer(
        image_size=32, patch_size=8, num_layers=2, num_heads=2, hidden_dim=16, mlp_dim=32,
        num_classes=4), 32, "encoder.layers.encoder_layer_1.ln_1", True),
    (lambda: torchvision.models.SwinTransformer(
        patch_size=[4, 4], embed_dim=16, depths=[1, 1], num_heads=[1, 1], window_size=[2, 2],
        num_classes=4), 32, "features.3.0.norm1", True),
])
def test_default_layer_of_real_architectures(build_model, size, layer, reshaped):
    model = build_model().eval()
    for head in (m for m in model.modules() if isinstance(m, torch.nn.Linear)):
        torch.nn.init.normal_(head.weight, std=0.1)  # torchvision's ViT starts with a zero head
    x = torch.rand(2, 3, size, size)
    f, params = fattr.functional(model)
    probe = Probe.run(model, f, params, x)
    assert probe.default_layer("gradcam") == layer
    assert (probe.reshape(layer) is not None) == reshaped
    cam = fattr.explain(model, x, "gradcam", relu=False)
    expected = fattr.gradcam(f, layer, relu=False, reshape=probe.reshape(layer))(
        params, x, model(x).argmax(1))
    assert cam.shape == (2, 1, size, size) and cam.abs().sum() > 0
    torch.testing.assert_close(cam, expected)
    assert hooks(model) == 0
