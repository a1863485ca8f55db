"""Models and peer post-processing shared by the CAM tests."""

from __future__ import annotations

from collections import OrderedDict

import numpy as np
import torch
from torch import Tensor, nn


def grad_cam_post(raw: Tensor, size: tuple[int, int]) -> np.ndarray:
    """pytorch-grad-cam 1.5.7's own post-processing applied to a raw layer-size map (B, 1, h, w).

    BaseCAM.compute_cam_per_layer: ReLU, then scale_cam_image (per-image min-max and
    cv2.resize to the input size); aggregate_multi_layers: ReLU, mean over layers,
    scale_cam_image again.
    """
    from pytorch_grad_cam.utils.image import scale_cam_image

    cam = np.maximum(raw[:, 0].detach().numpy(), 0)
    scaled = scale_cam_image(cam, size)[:, None]
    return scale_cam_image(np.maximum(scaled, 0).mean(1))


def grad_cam_peer(cls: type, net: nn.Module, layer: str, x: Tensor, targets: list[int],
                  **kwargs) -> np.ndarray:
    """Run a pytorch-grad-cam method on `net` at `layer` (hooks released afterwards)."""
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    with cls(model=net, target_layers=[net.get_submodule(layer)], **kwargs) as cam:
        return cam(input_tensor=x, targets=[ClassifierOutputTarget(t) for t in targets])


def tiny_vit(seed: int = 0) -> nn.Module:
    """torchvision VisionTransformer: 32 px, 8 px patches (4x4 tokens + CLS), random head."""
    import torchvision

    torch.manual_seed(seed)
    vit = torchvision.models.VisionTransformer(image_size=32, patch_size=8, num_layers=2,
                                               num_heads=2, hidden_dim=32, mlp_dim=64,
                                               num_classes=10)
    nn.init.normal_(vit.heads.head.weight, std=0.5)  # torchvision zero-initializes the head
    return vit.double().eval()


def tiny_swin(seed: int = 0) -> nn.Module:
    """torchvision SwinTransformer with two stages; its features are (B, H, W, C)."""
    import torchvision

    torch.manual_seed(seed)
    swin = torchvision.models.SwinTransformer(patch_size=[4, 4], embed_dim=16, depths=[2, 2],
                                              num_heads=[2, 2], window_size=[4, 4],
                                              num_classes=10)
    return swin.double().eval()


def relu_net(seed: int = 0) -> nn.Module:
    """A float64 ReLU CNN with biases everywhere: conv, BatchNorm, max pool, linear head."""
    torch.manual_seed(seed)
    net = nn.Sequential(OrderedDict(
        conv1=nn.Conv2d(2, 5, 3, padding=1), bn1=nn.BatchNorm2d(5), relu1=nn.ReLU(inplace=True),
        pool=nn.MaxPool2d(2), conv2=nn.Conv2d(5, 6, 3, padding=1), relu2=nn.ReLU(),
        gap=nn.AdaptiveAvgPool2d(2), flat=nn.Flatten(), fc=nn.Linear(24, 4))).double()
    with torch.no_grad():
        net.bn1.running_mean.uniform_(-0.5, 0.5)
        net.bn1.running_var.uniform_(0.5, 2.0)
        net.bn1.weight.uniform_(0.5, 1.5)
        net.bn1.bias.uniform_(-0.2, 0.2)
        net.conv2.bias.uniform_(-0.3, 0.3)
    return net.eval()
