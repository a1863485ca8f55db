"""Parity with zennit (real architectures, every rule, IG/SmoothGrad over relevance) and captum."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import fattr
from fattr.lrp import AlphaBeta, Epsilon, Flat, Gamma, Norm, WSquare, ZBox, ZPlus
from tests.conftest import resnet18
from tests.lrp.models import agreement, conv_net, one_hot_times_output, vgg11_bn, zennit_lrp

zennit = pytest.importorskip("zennit")
from zennit import composites as zc  # noqa: E402
from zennit import rules as zr  # noqa: E402
from zennit.canonizers import SequentialMergeBatchNorm  # noqa: E402
from zennit.torchvision import ResNetCanonizer, VGGCanonizer  # noqa: E402

ARCHITECTURES = {"resnet18": (resnet18, ResNetCanonizer), "vgg11_bn": (vgg11_bn, VGGCanonizer)}
COMPOSITES = {
    "epsilon_plus_flat": ({}, lambda c: zc.EpsilonPlusFlat(canonizers=[c])),
    "epsilon_gamma_box": ({"low": -2.5, "high": 2.5},
                          lambda c: zc.EpsilonGammaBox(low=-2.5, high=2.5, canonizers=[c])),
    "epsilon_alpha2_beta1": ({}, lambda c: zc.EpsilonAlpha2Beta1(canonizers=[c])),
}


@pytest.fixture(scope="module")
def architectures():
    return {name: make() for name, (make, _) in ARCHITECTURES.items()}


@pytest.mark.parametrize("composite", list(COMPOSITES))
@pytest.mark.parametrize("arch", list(ARCHITECTURES))
def test_zennit_parity_on_torchvision_models(architectures, arch, composite):
    net = architectures[arch]
    kwargs, zennit_composite = COMPOSITES[composite]
    f, params = fattr.functional(net)
    torch.manual_seed(3)
    x = torch.randn(2, 3, 32, 32)
    target = torch.tensor([2, 7])
    ours = fattr.lrp(f, composite, **kwargs)(params, x, target)
    theirs = zennit_lrp(net, zennit_composite(ARCHITECTURES[arch][1]()), x, target)
    corr, rel = agreement(ours, theirs)
    assert corr > 0.999 and rel < 1e-3, (corr, rel)


def _zennit_map(rule):
    return zc.LayerMapComposite(
        [(nn.ReLU, zr.Pass()), ((nn.AvgPool2d, nn.AdaptiveAvgPool2d), zr.Norm()),
         ((nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.ConvTranspose2d), rule), (nn.Linear, zr.Epsilon())],
        canonizers=[SequentialMergeBatchNorm()])


RULES = [(Epsilon(1e-3), zr.Epsilon(1e-3)), (ZPlus(), zr.ZPlus()), (AlphaBeta(), zr.AlphaBeta()),
         (Gamma(0.5), zr.Gamma(0.5)), (ZBox(-3.0, 3.0), zr.ZBox(-3.0, 3.0)), (Flat(), zr.Flat()),
         (WSquare(), zr.WSquare()), (Norm(), zr.Norm())]


def _layers_net(kind: str) -> nn.Module:
    torch.manual_seed(0)
    if kind == "conv1d":
        body = [nn.Conv1d(2, 4, 3), nn.BatchNorm1d(4), nn.ReLU(), nn.Flatten(), nn.Linear(24, 3)]
    elif kind == "conv3d":
        body = [nn.Conv3d(2, 3, 2), nn.ReLU(), nn.Flatten(), nn.Linear(81, 3)]
    else:
        body = [nn.ConvTranspose2d(2, 3, 3, stride=2), nn.BatchNorm2d(3), nn.ReLU(),
                nn.AdaptiveAvgPool2d(3), nn.Flatten(), nn.Linear(27, 3)]
    net = nn.Sequential(*body).double()
    for m in net.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            m.running_mean.uniform_(-0.3, 0.3)
            m.running_var.uniform_(0.5, 1.5)
            m.eps = 0.0  # zennit's folded BatchNorm keeps x / sqrt(1 + eps); make it exact
    return net.eval()


INPUTS = {"conv1d": (2, 8), "conv3d": (2, 4, 4, 4), "transposed": (2, 4, 4)}


@pytest.mark.parametrize("kind", list(INPUTS))
@pytest.mark.parametrize(("ours", "theirs"), RULES, ids=lambda r: type(r).__name__)
def test_zennit_parity_per_rule(kind, ours, theirs):
    net = _layers_net(kind)
    f, params = fattr.functional(net)
    x = torch.randn(3, *INPUTS[kind], dtype=torch.float64)
    target = torch.tensor([0, 2, 1])
    composite = {fattr.lrp.canonizers.LINEAR_LAYERS[1:]: ours, nn.Linear: Epsilon()}
    ref = zennit_lrp(net, _zennit_map(theirs), x, target)
    torch.testing.assert_close(fattr.lrp(f, composite)(params, x, target), ref,
                               rtol=1e-10, atol=1e-12)


def test_integrated_gradients_and_smoothgrad_over_relevance_match_zennit():
    from zennit.attribution import IntegratedGradients, SmoothGrad

    net = conv_net()
    net[1].eps = 0.0  # zennit's folded BatchNorm keeps x / sqrt(1 + eps); make it exact
    f, params = fattr.functional(net)
    x = torch.randn(3, 2, 8, 8, dtype=torch.float64)
    target = torch.tensor([1, 4, 0])
    relevance = fattr.lrp.model(f, "epsilon_plus")
    ig = fattr.integrated_gradients(relevance, steps=6, method="riemann_right")
    composite = zc.EpsilonPlus(canonizers=[SequentialMergeBatchNorm()])
    with IntegratedGradients(net, composite, n_iter=6) as attributor:
        _, ref = attributor(x, one_hot_times_output(target))
    # zennit's path fractions are float32 (torch.linspace): agreement to float32 rounding
    torch.testing.assert_close(ig(params, x, target), ref, rtol=1e-6, atol=1e-9)
    # zennit's SmoothGrad draws its own noise; with zero noise both are the relevance itself
    sg = fattr.smoothgrad(fattr.lrp(f, "epsilon_plus"), samples=4, stdev=0.0)
    with SmoothGrad(net, composite, noise_level=0.0, n_iter=4) as attributor:
        _, ref = attributor(x, one_hot_times_output(target))
    torch.testing.assert_close(sg(params, x, target), ref, rtol=1e-8, atol=1e-10)


class _CaptumNet(nn.Module):
    """Only module kinds captum's LRP knows (flatten done functionally)."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.conv1, self.relu1 = nn.Conv2d(2, 4, 3, padding=1), nn.ReLU()
        self.pool1 = nn.MaxPool2d(2)
        self.conv2, self.relu2 = nn.Conv2d(4, 6, 3, padding=1), nn.ReLU()
        self.pool2 = nn.AdaptiveAvgPool2d(2)
        self.fc1, self.relu3, self.fc2 = nn.Linear(24, 8), nn.ReLU(), nn.Linear(8, 3)

    def forward(self, x):
        x = self.pool1(self.relu1(self.conv1(x)))
        x = self.pool2(self.relu2(self.conv2(x)))
        return self.fc2(self.relu3(self.fc1(torch.flatten(x, 1))))


CAPTUM_COMPOSITE = {(nn.Linear, nn.Conv2d): Epsilon(1e-9), nn.AdaptiveAvgPool2d: Norm(1e-9)}


def test_captum_parity_on_a_small_cnn():
    from captum.attr import LRP

    net = _CaptumNet().double().eval()
    f, params = fattr.functional(net)
    x = torch.randn(4, 2, 8, 8, dtype=torch.float64)
    target = torch.tensor([0, 1, 2, 1])
    ref = LRP(net).attribute(x.clone(), target=target)
    ours = fattr.lrp(f, CAPTUM_COMPOSITE)(params, x, target)
    torch.testing.assert_close(ours, ref, rtol=1e-7, atol=1e-10)


def test_captum_reference_values():
    """captum's own test: Linear(3,3) of 2s -> ReLU -> Linear(3,1) of 3s, x = [1, 2, 3]."""
    from captum.attr import LRP

    net = nn.Sequential(nn.Linear(3, 3, bias=False), nn.ReLU(), nn.Linear(3, 1, bias=False))
    nn.init.constant_(net[0].weight, 2.0)
    nn.init.constant_(net[2].weight, 3.0)
    f, params = fattr.functional(net.eval())
    x = torch.tensor([[1.0, 2.0, 3.0]])
    ours = fattr.lrp(f, "epsilon", epsilon=1e-9)(params, x, 0)
    torch.testing.assert_close(ours, torch.tensor([[18.0, 36.0, 54.0]]))
    torch.testing.assert_close(ours, LRP(net).attribute(x.clone(), target=0))
