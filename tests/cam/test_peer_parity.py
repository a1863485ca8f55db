"""Parity with captum (LayerGradCam, GuidedGradCam) and pytorch-grad-cam 1.5.7.

pytorch-grad-cam returns post-processed maps (ReLU, per-image min-max, cv2 resize); fattr
returns raw maps, so its own post-processing is applied to fattr's raw layer-size map before
comparing.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

import fattr
from tests.cam.models import grad_cam_peer, grad_cam_post, tiny_swin, tiny_vit
from tests.conftest import resnet18, small_cnn


@pytest.fixture(scope="module")
def resnet():
    net = resnet18().double()
    f, params = fattr.functional(net)
    torch.manual_seed(1)
    return net, f, params, torch.randn(2, 3, 64, 64, dtype=torch.float64)


@pytest.mark.parametrize("relu", [False, True])
@pytest.mark.parametrize("arch", ["small_cnn", "resnet18"])
def test_captum_layer_gradcam(arch, relu, resnet):
    from captum.attr import LayerGradCam

    if arch == "small_cnn":
        net, layer = small_cnn(), "4"
        f, params = fattr.functional(net)
        x = torch.randn(3, 1, 8, 8, dtype=torch.float64)
    else:
        net, f, params, x = resnet
        layer = "layer3"
    target = [0, 3, 1][:x.shape[0]]
    expected = LayerGradCam(net, net.get_submodule(layer)).attribute(
        x, target=target, relu_attributions=relu)
    got = fattr.gradcam(f, layer, relu=relu, upsample=False)(params, x, target)
    torch.testing.assert_close(got, expected, rtol=1e-10, atol=1e-12)
    assert got.abs().max() > 1e-4


@pytest.mark.parametrize("arch", ["small_cnn", "resnet18"])
def test_captum_guided_gradcam(arch, resnet):
    from captum.attr import GuidedGradCam

    if arch == "small_cnn":
        net, layer = small_cnn(), "4"
        f, params = fattr.functional(net)
        x = torch.randn(3, 1, 8, 8, dtype=torch.float64)
    else:
        net, f, params, x = resnet
        layer = "layer3"
    target = [2, 0, 1][:x.shape[0]]
    with pytest.warns(UserWarning):  # captum warns that it sets requires_grad and hooks
        expected = GuidedGradCam(net, net.get_submodule(layer)).attribute(x, target=target)
    got = fattr.guided_gradcam(f, layer)(params, x, target)
    torch.testing.assert_close(got, expected, rtol=1e-10, atol=1e-12)
    assert got.abs().max() > 1e-5


GRAD_CAM_PEERS = {
    "gradcam": "GradCAM", "gradcam_plus_plus": "GradCAMPlusPlus", "xgradcam": "XGradCAM",
    "hirescam": "HiResCAM", "layercam": "LayerCAM", "gradcam_elementwise": "GradCAMElementWise",
    "eigengradcam": "EigenGradCAM", "fem": "FEM",
}


@pytest.mark.parametrize("name", GRAD_CAM_PEERS)
def test_grad_cam_parity_resnet18(name, resnet):
    import pytorch_grad_cam

    net, f, params, x = resnet
    peer = getattr(pytorch_grad_cam, GRAD_CAM_PEERS[name])
    expected = grad_cam_peer(peer, net, "layer3", x, [3, 7])
    raw = getattr(fattr, name)(f, "layer3", relu=False, upsample=False)(params, x, [3, 7])
    got = grad_cam_post(raw, (64, 64))
    if name == "eigengradcam":  # the sign of an SVD is arbitrary in pytorch-grad-cam
        got = np.where(np.abs(got - expected).max((1, 2), keepdims=True) > 0.5,
                       grad_cam_post(-raw, (64, 64)), got)
    assert np.abs(got - expected).max() < 2e-3
    assert expected.std() > 0.1  # the maps are not trivially flat


def test_grad_cam_parity_scorecam(resnet):
    from pytorch_grad_cam import ScoreCAM

    net, f, params, x = resnet
    x = x[:1]  # 128 masked forward passes per image and library
    expected = grad_cam_peer(ScoreCAM, net, "layer2", x, [3])
    raw = fattr.scorecam(f, "layer2", upsample=False, batch_size=96)(params, x, [3])
    got = grad_cam_post(raw, (64, 64))
    assert np.corrcoef(got.ravel(), expected.ravel())[0, 1] > 0.98
    # with pytorch-grad-cam's align_corners=True masks the maps agree to float rounding
    raw = fattr.scorecam(f, "layer2", upsample=False, batch_size=96, align_corners=True)(
        params, x, [3])
    assert np.abs(grad_cam_post(raw, (64, 64)) - expected).max() < 2e-3


def test_grad_cam_parity_ablationcam(resnet):
    from pytorch_grad_cam import AblationCAM

    net, f, params, x = resnet  # layer2 ends in a ReLU: pytorch-grad-cam ablates with 0 too
    expected = grad_cam_peer(AblationCAM, net, "layer2", x, [3, 7])
    raw = fattr.ablationcam(f, "layer2", upsample=False, batch_size=100)(params, x, [3, 7])
    assert np.abs(grad_cam_post(raw, (64, 64)) - expected).max() < 2e-3


def test_fattr_upsampling_matches_cv2_resize(resnet):
    """fattr's bilinear upsampling (align_corners=False) is cv2's INTER_LINEAR resize."""
    from pytorch_grad_cam import GradCAM

    net, f, params, x = resnet
    expected = grad_cam_peer(GradCAM, net, "layer3", x, [3, 7])
    up = fattr.gradcam(f, "layer3")(params, x, [3, 7])[:, 0].numpy()
    up = up - up.min((1, 2), keepdims=True)  # pytorch-grad-cam's scale_cam_image
    up = up / (1e-7 + up.max((1, 2), keepdims=True))
    assert np.abs(up - expected).max() < 2e-3


def _vit_reshape(t):
    return t[:, 1:].reshape(t.shape[0], 4, 4, t.shape[2]).permute(0, 3, 1, 2)


TRANSFORMERS = {
    "vit": (tiny_vit, "encoder.layers.encoder_layer_1.ln_1", fattr.tokens_to_grid(1),
            _vit_reshape),
    "swin": (tiny_swin, "features.3", fattr.tokens_to_grid(layout="bhwc"),
             lambda t: t.permute(0, 3, 1, 2)),
}


@pytest.mark.parametrize("name", ["gradcam", "gradcam_plus_plus", "xgradcam", "hirescam",
                                  "layercam", "scorecam"])
@pytest.mark.parametrize("arch", TRANSFORMERS)
def test_grad_cam_parity_transformers(arch, name):
    import pytorch_grad_cam

    build, layer, reshape, peer_reshape = TRANSFORMERS[arch]
    net = build()
    f, params = fattr.functional(net)
    x = torch.randn(2, 3, 32, 32, dtype=torch.float64)
    peer = {"gradcam": "GradCAM", "gradcam_plus_plus": "GradCAMPlusPlus",
            "xgradcam": "XGradCAM", "hirescam": "HiResCAM", "layercam": "LayerCAM",
            "scorecam": "ScoreCAM"}[name]
    expected = grad_cam_peer(getattr(pytorch_grad_cam, peer), net, layer, x, [1, 4],
                             reshape_transform=peer_reshape)
    extra = {"align_corners": True} if name == "scorecam" else {}
    raw = getattr(fattr, name)(f, layer, relu=False, upsample=False, reshape=reshape, **extra)(
        params, x, [1, 4])
    assert raw.shape == (2, 1, 4, 4)
    assert np.abs(grad_cam_post(raw, (32, 32)) - expected).max() < 2e-3
    assert expected.std() > 0.1
