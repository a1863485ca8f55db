"""torchvision's own swin_t (random weights, 64x64 inputs) with tokens_to_grid(layout="bhwc"),
against pytorch-grad-cam given the equivalent reshape transform."""

from __future__ import annotations

import numpy as np
import pytest
import pytorch_grad_cam
import torch
import torchvision

import fattr
from tests.cam.models import grad_cam_peer, grad_cam_post


@pytest.fixture(scope="module")
def swin_t():
    torch.manual_seed(0)
    net = torchvision.models.swin_t(num_classes=10)
    torch.nn.init.normal_(net.head.weight, std=0.5)  # a head that separates the classes
    return net.double().eval()


@pytest.mark.parametrize(("name", "peer"), [("gradcam", "GradCAM"), ("layercam", "LayerCAM")])
def test_swin_t_matches_pytorch_grad_cam(swin_t, name, peer):
    f, params = fattr.functional(swin_t)
    x = torch.randn(2, 3, 64, 64, dtype=torch.float64)
    layer = "features.5"  # stage 3: (B, 4, 4, 384) tokens, channels last
    expected = grad_cam_peer(getattr(pytorch_grad_cam, peer), swin_t, layer, x, [1, 4],
                             reshape_transform=lambda t: t.permute(0, 3, 1, 2))
    cam = getattr(fattr, name)(f, layer, relu=False, upsample=False,
                               reshape=fattr.tokens_to_grid(layout="bhwc"))
    raw = cam(params, x, [1, 4])
    assert raw.shape == (2, 1, 4, 4)
    assert np.abs(grad_cam_post(raw, (64, 64)) - expected).max() < 2e-3
    assert expected.std() > 0.05
