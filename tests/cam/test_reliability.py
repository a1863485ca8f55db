"""Bad input gets a clear error; the user's model is never changed, also when a call raises."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import fattr
from tests.cam.test_composition import METHODS
from tests.conftest import assert_unchanged, resnet18, small_cnn, state_snapshot

CLASS_AGNOSTIC = {"eigencam", "fem"}  # they ignore the target


@pytest.fixture
def case():
    net = small_cnn()
    f, params = fattr.functional(net)
    return net, f, params, torch.randn(3, 1, 8, 8, dtype=torch.float64)


@pytest.mark.parametrize("name", METHODS)
def test_model_unchanged_after_success_and_after_errors(case, name):
    net, f, params, x = case
    before = state_snapshot(net)
    attr = METHODS[name](f)
    attr(params, x, [0, 1, 2])
    assert_unchanged(net, before)
    if name not in CLASS_AGNOSTIC:
        with pytest.raises(ValueError, match="out of range"):
            attr(params, x, 9)  # raises inside the forward pass, with the taps registered
        assert_unchanged(net, before)
    with pytest.raises(RuntimeError):
        attr(params, torch.randn(3, 2, 8, 8, dtype=torch.float64), 0)  # the model itself fails
    assert_unchanged(net, before)


@pytest.mark.parametrize("name", METHODS)
def test_mismatched_target_list_is_an_error(case, name):
    _, f, params, x = case
    with pytest.raises(ValueError, match=r"one index per example, shape \(3,\)"):
        METHODS[name](f)(params, x, [0, 1])


@pytest.mark.parametrize("name", METHODS)
def test_empty_batch(case, name):
    _, f, params, x = case
    out = METHODS[name](f)(params, x[:0], torch.zeros(0, dtype=torch.long))
    assert out.shape == (0, 1, 8, 8) and out.dtype == x.dtype


def test_empty_batch_without_upsampling_has_the_layer_size(case):
    _, f, params, x = case
    assert fattr.gradcam(f, "4", upsample=False)(params, x[:0]).shape == (0, 1, 4, 4)


def test_unknown_layer_names_it_and_suggests_close_names():
    f, _ = fattr.functional(resnet18())
    with pytest.raises(ValueError, match=r"no layer named 'layer5'.*Did you mean 'layer\d'"):
        fattr.gradcam(f, "layer5")
    with pytest.raises(ValueError, match=r"no layer named 'layer4.1.con2'.*'layer4.1.conv2'"):
        fattr.scorecam(f, "layer4.1.con2")


def test_layer_as_module(case):
    net, f, params, x = case
    torch.testing.assert_close(fattr.gradcam(f, net[4])(params, x, 1),
                               fattr.gradcam(f, "4")(params, x, 1))
    with pytest.raises(ValueError, match="not part of the model"):
        fattr.gradcam(f, nn.Conv2d(1, 1, 1))
    with pytest.raises(TypeError, match="dotted name"):
        fattr.gradcam(f, 4)


def test_plain_function_has_no_layers():
    g = lambda params, x: x.flatten(1)
    with pytest.raises(TypeError, match="needs the module tree"):
        fattr.gradcam(g, "layer4")
    with pytest.raises(TypeError, match="needs the module tree"):
        fattr.fullgrad(g)


def test_bad_options(case):
    _, f, _, _ = case
    with pytest.raises(ValueError, match="relu must be True or False"):
        fattr.gradcam(f, "4", relu="yes")
    with pytest.raises(ValueError, match="upsample must be True"):
        fattr.gradcam(f, "4", upsample="cubic")
    with pytest.raises(TypeError, match="reshape must be a callable"):
        fattr.gradcam(f, "4", reshape=(2, 2))
    with pytest.raises(ValueError, match="batch_size must be a positive int"):
        fattr.scorecam(f, "4", batch_size=0)
    with pytest.raises(ValueError, match="batch_size must be a positive int"):
        fattr.ablationcam(f, "4", batch_size=2.5)
    with pytest.raises(ValueError, match="align_corners must be True or False"):
        fattr.scorecam(f, "4", align_corners=1)
    with pytest.raises(ValueError, match="k must be a finite number >= 0"):
        fattr.fem(f, "4", k="2")
    with pytest.raises(ValueError, match=r"fem: k must be a finite number >= 0 .* got -1"):
        fattr.fem(f, "4", k=-1)
    with pytest.raises(ValueError, match="scales must be a non-empty sequence"):
        fattr.cameras(f, "4", scales=())
    with pytest.raises(ValueError, match="scales must be a non-empty sequence"):
        fattr.cameras(f, "4", scales=(1.0, -2.0))


def test_cameras_needs_spatial_inputs():
    net = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.ReLU(), torch.nn.Linear(3, 2))
    f, params = fattr.functional(net.double().eval())
    with pytest.raises(ValueError, match="inputs need 1 to 3 spatial axes"):
        fattr.cameras(f, "0", scales=(1.0, 2.0))(params, torch.randn(2, 4, dtype=torch.float64))


def test_non_spatial_layer_asks_for_reshape(case):
    _, f, params, x = case
    with pytest.raises(ValueError, match=r"needs \(B, C, \*spatial\).*tokens_to_grid"):
        fattr.gradcam(f, "8")(params, x, 0)


def test_training_mode_is_an_error(case):
    net, f, params, x = case
    net.train()
    with pytest.raises(ValueError, match=r"training mode.*model.eval\(\)"):
        fattr.gradcam(f, "4")(params, x, 0)


def test_reused_layer_is_an_error():
    relu = nn.ReLU()
    net = nn.Sequential(nn.Conv2d(1, 2, 3), relu, nn.Conv2d(2, 2, 3), relu, nn.Flatten()).eval()
    f, params = fattr.functional(net)
    before = state_snapshot(net)
    with pytest.raises(ValueError, match="ran 2 times in one forward pass"):
        fattr.gradcam(f, "1")(params, torch.randn(2, 1, 7, 7), 0)
    assert_unchanged(net, before)


def test_guided_checks(case):
    _, f, params, x = case
    with pytest.raises(TypeError, match="cam_fn must be an attribution function"):
        fattr.guided(fattr.saliency(f), "gradcam")
    with pytest.raises(ValueError, match="both be batched or both per-example"):
        fattr.guided(fattr.saliency(f), fattr.gradcam(fattr.per_example(f), "4"))
    with pytest.raises(ValueError, match="upsample=False cannot combine"):
        fattr.guided(fattr.saliency(f), fattr.gradcam(f, "4"), upsample=False)
    with pytest.raises(ValueError, match="one map per example"):
        fattr.guided(fattr.saliency(f), lambda p, x, t: x.new_ones(3, 2, 8, 8))(params, x, 0)


def test_fullgrad_needs_running_statistics():
    net = nn.Sequential(nn.Conv2d(1, 2, 3), nn.BatchNorm2d(2, track_running_stats=False),
                        nn.Flatten(), nn.LazyLinear(2)).eval()
    net(torch.randn(1, 1, 5, 5))
    f, params = fattr.functional(net)
    with pytest.raises(ValueError, match="keeps no running statistics"):
        fattr.fullgrad(f)(params, torch.randn(2, 1, 5, 5), 0)
