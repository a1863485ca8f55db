"""Each CAM against an independent re-derivation of its definition (REFERENCES.md)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import fattr
from tests.cam.models import relu_net
from tests.conftest import forward_calls, resnet18, small_cnn


def layer_and_gradient(net, layer, x, target):
    """A and dy_t/dA by plain autograd with a forward hook (independent of fattr's taps)."""
    store = {}

    def hook(_, __, out):
        a = out.clone()
        a.retain_grad()
        store["a"] = a
        return a + 0  # the model goes on with a copy that later in-place ops may change

    handle = net.get_submodule(layer).register_forward_hook(hook)
    try:
        out = net(x)
    finally:
        handle.remove()
    out[torch.arange(len(target)), torch.tensor(target)].sum().backward()
    return store["a"].detach(), store["a"].grad.detach()


@pytest.fixture
def cnn():
    net = small_cnn()
    f, params = fattr.functional(net)
    return net, f, params, torch.randn(3, 1, 8, 8, dtype=torch.float64), [0, 3, 1]


def test_gradcam_family_formulas(cnn):
    net, f, params, x, t = cnn
    a, g = layer_and_gradient(net, "4", x, t)
    formulas = {
        "gradcam": (g.mean((2, 3), keepdim=True) * a).sum(1),
        "hirescam": (g * a).sum(1),
        "layercam": (g.clamp(min=0) * a).sum(1),
        "gradcam_elementwise": (g * a).clamp(min=0).sum(1),
        "xgradcam": ((g * a).sum((2, 3), keepdim=True) / (a.sum((2, 3), keepdim=True) + 1e-7)
                     * a).sum(1),
    }
    for name, expected in formulas.items():
        got = getattr(fattr, name)(f, "4", relu=False, upsample=False)(params, x, t)
        torch.testing.assert_close(got[:, 0], expected, rtol=1e-10, atol=1e-12, msg=name)


def test_gradcam_plus_plus_formula(cnn):
    net, f, params, x, t = cnn
    a, g = layer_and_gradient(net, "4", x, t)
    an, gn = a.numpy(), g.numpy()
    alpha = gn**2 / (2 * gn**2 + an.sum((2, 3), keepdims=True) * gn**3 + 1e-6)
    alpha = np.where(gn != 0, alpha, 0)
    weights = (np.maximum(gn, 0) * alpha).sum((2, 3), keepdims=True)
    got = fattr.gradcam_plus_plus(f, "4", relu=False, upsample=False)(params, x, t)
    np.testing.assert_allclose(got[:, 0].numpy(), (weights * an).sum(1), rtol=1e-10, atol=1e-12)


def test_relu_and_upsample_options(cnn):
    _net, f, params, x, t = cnn
    raw = fattr.gradcam(f, "4", relu=False, upsample=False)(params, x, t)
    assert raw.shape == (3, 1, 4, 4) and (raw < 0).any() and (raw > 0).any()
    torch.testing.assert_close(fattr.gradcam(f, "4", upsample=False)(params, x, t), raw.relu())
    torch.testing.assert_close(
        fattr.gradcam(f, "4")(params, x, t),
        F.interpolate(raw.relu(), size=(8, 8), mode="bilinear", align_corners=False))
    torch.testing.assert_close(fattr.gradcam(f, "4", upsample="nearest")(params, x, t),
                               F.interpolate(raw.relu(), size=(8, 8), mode="nearest"))


def test_eigencam_is_first_principal_component(cnn):
    """Projection of the centred (positions x channels) activations on the first right
    singular vector, oriented so that the vector's entries sum to >= 0."""
    from pytorch_grad_cam.utils.svd_on_activations import get_2d_projection

    _net, f, params, x, _ = cnn
    a = fattr.layer_activation(f, "4")(params, x).numpy()
    got = fattr.eigencam(f, "4", relu=False, upsample=False)(params, x)[:, 0].numpy()
    for b in range(x.shape[0]):
        rows = a[b].reshape(a.shape[1], -1).T
        centred = rows - rows.mean(0)
        v = np.linalg.svd(centred)[2][0]
        v = v if v.sum() >= 0 else -v
        np.testing.assert_allclose(got[b].ravel(), centred @ v, rtol=1e-8, atol=1e-10)
    peer = get_2d_projection(a)  # pytorch-grad-cam: the same up to its arbitrary sign
    for b in range(x.shape[0]):
        assert min(np.abs(got[b] - peer[b]).max(), np.abs(got[b] + peer[b]).max()) < 1e-5


def test_eigengradcam_is_eigencam_of_gradient_times_activation(cnn):
    net, f, params, x, t = cnn
    a, g = layer_and_gradient(net, "4", x, t)
    got = fattr.eigengradcam(f, "4", relu=False, upsample=False)(params, x, t)[:, 0].numpy()
    for b in range(x.shape[0]):
        rows = (g * a)[b].reshape(a.shape[1], -1).T.numpy()
        centred = rows - rows.mean(0)
        v = np.linalg.svd(centred)[2][0]
        np.testing.assert_allclose(got[b].ravel(), centred @ (v if v.sum() >= 0 else -v),
                                   rtol=1e-8, atol=1e-10)


def test_fem_formula(cnn):
    _net, f, params, x, _ = cnn
    a = fattr.layer_activation(f, "4")(params, x).numpy()
    threshold = a.mean((2, 3), keepdims=True) + 1.5 * a.std((2, 3), keepdims=True)
    weights = (a > threshold).mean((2, 3), keepdims=True)
    got = fattr.fem(f, "4", relu=False, upsample=False, k=1.5)(params, x)
    np.testing.assert_allclose(got[:, 0].numpy(), (weights * a).sum(1), rtol=1e-10)


def test_scorecam_definition(cnn):
    """Per image and channel, one masked forward pass at a time."""
    net, f, params, x, t = cnn
    a = fattr.layer_activation(f, "4")(params, x)
    expected = []
    with torch.no_grad():
        for b in range(x.shape[0]):
            scores = []
            for c in range(a.shape[1]):
                m = F.interpolate(a[b, c][None, None], size=(8, 8), mode="bilinear",
                                  align_corners=False)
                m = (m - m.min()) / (m.max() - m.min() + 1e-8)
                scores.append(net(x[b:b + 1] * m)[0, t[b]])
            w = torch.stack(scores).softmax(0)
            expected.append((w[:, None, None] * a[b]).sum(0))
    got = fattr.scorecam(f, "4", relu=False, upsample=False)(params, x, t)
    torch.testing.assert_close(got[:, 0], torch.stack(expected), rtol=1e-10, atol=1e-12)


def test_ablationcam_definition(cnn):
    """w_c = (y - y with channel c of the layer set to zero) / y, one ablation at a time."""
    net, f, params, x, t = cnn
    a = fattr.layer_activation(f, "4")(params, x)
    rows = torch.arange(x.shape[0])
    with torch.no_grad():
        y = net(x)[rows, t]
        dropped = []
        for c in range(a.shape[1]):
            def zero(_, __, out, c=c):
                out = out.clone()
                out[:, c] = 0
                return out
            handle = net[4].register_forward_hook(zero)
            dropped.append(net(x)[rows, t])
            handle.remove()
        w = (y[:, None] - torch.stack(dropped, 1)) / y[:, None]
    expected = (w[:, :, None, None] * a).sum(1)
    got = fattr.ablationcam(f, "4", relu=False, upsample=False)(params, x, t)
    torch.testing.assert_close(got[:, 0], expected, rtol=1e-10, atol=1e-12)


def test_ablationcam_does_not_compute_the_layer_again_for_each_ablation(cnn):
    """The ablated passes replay the recorded layer output (a rewritten copy), so the user's
    layer runs once per call, not once per chunk of B * C ablations."""
    net, f, params, x, t = cnn
    assert forward_calls(net[4], lambda: fattr.ablationcam(f, "4", batch_size=2)(params, x, t)) == 1


def _general_path(monkeypatch):
    import importlib

    module = importlib.import_module("fattr.layers.edits")
    monkeypatch.setattr(module, "_prefix_once", lambda *args: None)


@pytest.mark.parametrize("layer", ["layer1", "layer3", "layer4.0.conv2"])
def test_ablationcam_prefix_once_equals_the_general_path(monkeypatch, layer):
    """The layers before the tapped one run on one row per image and chunk; the replayed
    output carries the ablated rows (residual blocks around and after the layer included)."""
    net = resnet18().double()
    f, params = fattr.functional(net)
    x, t = torch.randn(3, 3, 32, 32, dtype=torch.float64), [1, 5, 9]
    fast = fattr.ablationcam(f, layer, relu=False, batch_size=48)(params, x, t)
    _general_path(monkeypatch)
    general = fattr.ablationcam(f, layer, relu=False, batch_size=48)(params, x, t)
    torch.testing.assert_close(fast, general, rtol=1e-9, atol=1e-12)


def test_ablationcam_runs_the_layers_before_the_tapped_one_once_per_image_and_chunk(cnn):
    net, f, params, x, t = cnn
    channels = fattr.layer_activation(f, "4")(params, x).shape[1]
    chunks = -(-channels // 4)
    calls = forward_calls(net[0], lambda: fattr.ablationcam(f, "4", batch_size=4)(params, x, t))
    assert calls == 1 + 1 + x.shape[0] * chunks  # recorded run, the check, per image and chunk


class _BatchFromInput(torch.nn.Module):
    """Reshapes by the INPUT's batch size after the layer: rows cannot be added there."""

    def __init__(self, net: torch.nn.Module):
        super().__init__()
        self.net = net

    def forward(self, x):
        h = self.net[:5](x)
        return self.net[5:](h.reshape(x.shape[0], *h.shape[1:]))


def test_ablationcam_takes_the_general_path_for_a_model_that_needs_the_input_batch(
        monkeypatch, cnn):
    net, _, _, x, t = cnn
    g, p = fattr.functional(_BatchFromInput(net).eval())
    got = fattr.ablationcam(g, "net.4", batch_size=5)(p, x, t)
    _general_path(monkeypatch)
    torch.testing.assert_close(got, fattr.ablationcam(g, "net.4", batch_size=5)(p, x, t))


class _TupleOut(torch.nn.Module):
    """Returns (tensor, extra): the ablated passes must then edit, not replay, the output."""

    def __init__(self, conv: torch.nn.Module):
        super().__init__()
        self.conv = conv

    def forward(self, x):
        return self.conv(x), x.shape[0]


def test_ablationcam_layer_returning_a_tuple_matches_the_tensor_layer(cnn):
    net, f, params, x, t = cnn
    tupled = torch.nn.Sequential(*net[:4], _TupleOut(net[4]), _First(), *net[5:]).eval()
    g, p = fattr.functional(tupled)
    expected = fattr.ablationcam(f, "4", batch_size=5)(params, x, t)
    torch.testing.assert_close(fattr.ablationcam(g, "4", batch_size=5)(p, x, t), expected)


class _First(torch.nn.Module):
    def forward(self, pair):
        return pair[0]


def test_ablationcam_on_tokens_zeroes_the_feature_of_patch_tokens_only():
    """With tokens_to_grid, channel c is feature c of the patch tokens; CLS stays intact."""
    from tests.cam.models import tiny_vit

    net = tiny_vit()
    f, params = fattr.functional(net)
    x = torch.randn(2, 3, 32, 32, dtype=torch.float64)
    layer = "encoder.layers.encoder_layer_1.ln_1"
    tokens = fattr.layer_activation(f, layer)(params, x)
    rows = torch.arange(2)
    with torch.no_grad():
        y = net(x)[rows, [1, 4]]
        dropped = []
        for c in range(tokens.shape[2]):
            def zero(_, __, out, c=c):
                out = out.clone()
                out[:, 1:, c] = 0
                return out
            handle = net.get_submodule(layer).register_forward_hook(zero)
            dropped.append(net(x)[rows, [1, 4]])
            handle.remove()
        w = (y[:, None] - torch.stack(dropped, 1)) / y[:, None]
    grid = fattr.tokens_to_grid(1)(tokens)
    expected = (w[:, :, None, None] * grid).sum(1)
    got = fattr.ablationcam(f, layer, relu=False, upsample=False,
                            reshape=fattr.tokens_to_grid(1))(params, x, [1, 4])
    torch.testing.assert_close(got[:, 0], expected, rtol=1e-9, atol=1e-10)


@pytest.mark.parametrize("arch", ["relu_net", "resnet18"])
def test_fullgrad_completeness(arch):
    """For a ReLU network with biases: y_t = sum(x * grad_x) + sum of all bias-gradient terms."""
    if arch == "relu_net":
        net, x = relu_net(), torch.randn(3, 2, 8, 8, dtype=torch.float64)
    else:
        net, x = resnet18().double(), torch.randn(2, 3, 32, 32, dtype=torch.float64)
    f, params = fattr.functional(net)
    target = torch.tensor([1, 3, 0][:x.shape[0]])
    terms = fattr.fullgrad_terms(f, params, x, target)
    expected_layers = {n for n, m in net.named_modules()
                       if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)
                       or getattr(m, "bias", None) is not None}
    assert set(terms) == {"input"} | expected_layers
    total = sum(t.flatten(1).sum(1) for t in terms.values())
    y = f(params, x)[torch.arange(x.shape[0]), target]
    torch.testing.assert_close(total, y, rtol=1e-10, atol=1e-10)
    assert (terms["input"].flatten(1).sum(1) - y).abs().max() > 1e-3  # biases matter here


def test_fullgrad_bias_terms_and_saliency():
    net = relu_net()
    f, params = fattr.functional(net)
    x = torch.randn(3, 2, 8, 8, dtype=torch.float64)
    t = [1, 3, 0]
    terms = fattr.fullgrad_terms(f, params, x, t)
    _, g = layer_and_gradient(net, "bn1", x, t)
    bn = net.bn1
    bias = bn.bias - bn.running_mean * bn.weight / torch.sqrt(bn.running_var + bn.eps)
    torch.testing.assert_close(terms["bn1"], g * bias.detach()[:, None, None])

    def psi(term):
        term = term.abs()
        low = term.flatten(1).min(1).values[:, None, None, None]
        term = term - low
        return term / (term.flatten(1).max(1).values[:, None, None, None] + 1e-6)

    expected = sum(F.interpolate(psi(terms[k]), size=(8, 8), mode="bilinear",
                                 align_corners=False).sum(1, keepdim=True)
                   for k in ("input", "conv1", "bn1", "conv2"))
    torch.testing.assert_close(fattr.fullgrad(f)(params, x, t), expected)


def test_cameras_one_scale_is_relu_of_upsampled_product(cnn):
    net, f, params, x, t = cnn
    a, g = layer_and_gradient(net, "4", x, t)
    up = lambda m: F.interpolate(m, size=(8, 8), mode="bilinear", align_corners=False)
    expected = (up(a) * up(g)).sum(1, keepdim=True).relu()
    torch.testing.assert_close(fattr.cameras(f, "4", scales=(1.0,))(params, x, t), expected)


def test_cameras_averages_activations_and_gradients_over_scales(cnn):
    net, f, params, x, t = cnn
    up = lambda m: F.interpolate(m, size=(8, 8), mode="bilinear", align_corners=False)
    big = F.interpolate(x, size=(16, 16), mode="bicubic", align_corners=False)
    a1, g1 = layer_and_gradient(net, "4", x, t)
    a2, g2 = layer_and_gradient(net, "4", big, t)
    expected = (((up(a1) + up(a2)) / 2) * ((up(g1) + up(g2)) / 2)).sum(1, keepdim=True).relu()
    got = fattr.cameras(f, "4", scales=(1.0, 2.0))(params, x, t)
    torch.testing.assert_close(got, expected)
    assert not torch.allclose(got, fattr.cameras(f, "4", scales=(1.0,))(params, x, t))


def test_guided_any_attribution_times_any_cam(cnn):
    _net, f, params, x, t = cnn
    ig = fattr.integrated_gradients(f, steps=8)
    cam = fattr.layercam(f, "4", upsample=False)
    got = fattr.guided(ig, cam)(params, x, t, baseline=0.5)
    expected = ig(params, x, t, baseline=0.5) * F.interpolate(
        cam(params, x, t), size=(8, 8), mode="bilinear", align_corners=False)
    torch.testing.assert_close(got, expected)
    nearest = fattr.guided(fattr.saliency(f), cam, "nearest")(params, x, t)
    torch.testing.assert_close(nearest, fattr.saliency(f)(params, x, t) * F.interpolate(
        cam(params, x, t), size=(8, 8), mode="nearest"))
