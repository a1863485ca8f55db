"""Every CAM: right shape, vmap over targets, per-example vmap, grad through, batch_size."""

from __future__ import annotations

import pytest
import torch
from torch.func import grad, vmap

import fattr
from tests.conftest import directional_derivative, small_cnn

LAYER = "4"
METHODS = {
    "gradcam": lambda f: fattr.gradcam(f, LAYER),
    "gradcam_plus_plus": lambda f: fattr.gradcam_plus_plus(f, LAYER),
    "xgradcam": lambda f: fattr.xgradcam(f, LAYER),
    "hirescam": lambda f: fattr.hirescam(f, LAYER, relu=False),
    "layercam": lambda f: fattr.layercam(f, LAYER),
    "gradcam_elementwise": lambda f: fattr.gradcam_elementwise(f, LAYER),
    "eigencam": lambda f: fattr.eigencam(f, LAYER, relu=False),
    "eigengradcam": lambda f: fattr.eigengradcam(f, LAYER, relu=False),
    "fem": lambda f: fattr.fem(f, LAYER),
    "scorecam": lambda f: fattr.scorecam(f, LAYER, batch_size=5),
    "ablationcam": lambda f: fattr.ablationcam(f, LAYER, batch_size=5),
    "fullgrad": fattr.fullgrad,
    "cameras": lambda f: fattr.cameras(f, LAYER, scales=(1.0, 1.5)),
    "guided_gradcam": lambda f: fattr.guided_gradcam(f, LAYER),
    "guided_ig_layercam": lambda f: fattr.guided(fattr.integrated_gradients(f, steps=4),
                                                 fattr.layercam(f, LAYER, upsample=False)),
}
X_SHAPED = {"guided_gradcam", "guided_ig_layercam"}


@pytest.fixture
def case():
    net = small_cnn()
    f, params = fattr.functional(net)
    return net, f, params, torch.randn(3, 1, 8, 8, dtype=torch.float64)


@pytest.mark.parametrize("name", METHODS)
def test_shape_vmap_over_targets_and_per_example(case, name):
    _, f, params, x = case
    attr = METHODS[name](f)
    target = torch.tensor([0, 3, 1])
    maps = attr(params, x, target)
    assert maps.shape == (x.shape if name in X_SHAPED else (3, 1, 8, 8))
    assert maps.dtype == x.dtype and torch.isfinite(maps).all() and maps.abs().max() > 0
    targets = torch.tensor([[0, 3, 1], [2, 2, 0]])
    mapped = vmap(attr, in_dims=(None, None, 0))(params, x, targets)
    for k in range(2):
        torch.testing.assert_close(mapped[k], attr(params, x, targets[k]), rtol=1e-10,
                                   atol=1e-12)
    per_example = vmap(METHODS[name](fattr.per_example(f)), in_dims=(None, 0, 0))(
        params, x, target)
    torch.testing.assert_close(per_example, maps, rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("name", METHODS)
def test_grad_through_the_map_matches_finite_differences(case, name):
    """A CAM can sit in a training loss: d loss / d params along a random direction."""
    net, f, params, x = case
    attr = METHODS[name](f)
    target = torch.tensor([0, 3, 1])
    weights = {k: v.detach() for k, v in net.named_parameters()}
    d = directional_derivative(lambda w: attr({**params, **w}, x, target).square().sum(),
                               weights)
    torch.testing.assert_close(d.analytic, d.numeric, rtol=1e-4, atol=1e-7)
    assert d.analytic.abs() > 1e-6


@pytest.mark.parametrize("name", ["scorecam", "ablationcam"])
def test_batch_size_does_not_change_the_result(case, name):
    _, f, params, x = case
    method = getattr(fattr, name)
    reference = method(f, LAYER, batch_size=None)(params, x, [0, 3, 1])
    for batch_size in (1, 4, 7):
        torch.testing.assert_close(method(f, LAYER, batch_size=batch_size)(params, x, [0, 3, 1]),
                                   reference, rtol=1e-12, atol=1e-14)


def test_callable_target_and_input_gradient(case):
    """Any scalar objective works as target; the map is differentiable in x as well."""
    _, f, params, x = case
    cam = fattr.gradcam(f, LAYER, relu=False)
    prob = lambda out: out.softmax(-1)[:, 2]
    maps = cam(params, x, prob)
    assert maps.shape == (3, 1, 8, 8)
    gx = grad(lambda inputs: cam(params, inputs, prob).sum())(x)
    assert gx.shape == x.shape and gx.abs().sum() > 0


def test_tensors_requiring_grad_carry_a_graph(case):
    _net, f, params, x = case
    x = x.clone().requires_grad_()
    maps = fattr.gradcam(f, LAYER)(params, x, [0, 1, 2])
    assert maps.requires_grad
    maps.sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0


def test_smoothgrad_wraps_a_cam(case):
    """A noise-averaged CAM by composition: the mean of the CAMs of the noisy copies."""
    _, f, params, x = case
    cam = fattr.gradcam_plus_plus(f, LAYER)
    smooth = fattr.smoothgrad(cam, samples=4, stdev=0.1)(
        params, x, [0, 3, 1], generator=torch.Generator().manual_seed(3))
    g = torch.Generator().manual_seed(3)
    span = (x.flatten(1).amax(1) - x.flatten(1).amin(1)).reshape(-1, 1, 1, 1)
    noise = torch.randn((4, *x.shape), generator=g, dtype=x.dtype) * 0.1 * span
    expected = torch.stack([cam(params, x + n, [0, 3, 1]) for n in noise]).mean(0)
    torch.testing.assert_close(smooth, expected)
    assert smooth.shape == (3, 1, 8, 8)
