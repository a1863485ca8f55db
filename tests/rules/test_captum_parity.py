"""Parity with captum (GuidedBackprop, Deconvolution, DeepLift, DeepLiftShap), float64.

Hand-made nets, torchvision resnet18 (in-place ReLU used twice per block, `out += identity`,
overlapping max pooling) and vgg11_bn (ReLU straight into MaxPool). captum's DeepLift bugs are
shown first, then worked around on an equivalent model (see `captum_reference`).
"""

from __future__ import annotations

import captum.attr as ca
import pytest
import torch
import torchvision
from torch import nn

import fattr
from tests.conftest import mlp, randomize_batchnorm, resnet18, small_cnn
from tests.rules.captum_reference import accumulating_max_pool, captum_friendly, dedupe_relus

TOL = dict(rtol=1e-10, atol=1e-12)


def head(act: nn.Module, softmax: bool = False) -> nn.Module:
    torch.manual_seed(3)
    layers = [nn.Flatten(), nn.Linear(16, 10), act, nn.Linear(10, 3)]
    return nn.Sequential(*layers, *([nn.Softmax(dim=1)] if softmax else [])).double().eval()


ACTIVATIONS = [nn.ReLU(), nn.ELU(0.7), nn.LeakyReLU(0.2), nn.Sigmoid(), nn.Tanh(),
               nn.Softplus(beta=2.0)]


@pytest.fixture
def vgg() -> nn.Module:
    torch.manual_seed(0)
    net = torchvision.models.vgg11_bn(num_classes=10)
    randomize_batchnorm(net)
    return net.double().eval()


def images(batch: int = 2, size: int = 32) -> tuple[torch.Tensor, torch.Tensor]:
    x = torch.randn(batch, 3, size, size, dtype=torch.float64)
    return x, 0.1 * torch.randn_like(x)


@pytest.mark.parametrize("net", [mlp(), small_cnn()], ids=["mlp", "cnn"])
@pytest.mark.parametrize("method, peer", [(fattr.guided_backprop, ca.GuidedBackprop),
                                          (fattr.deconvnet, ca.Deconvolution)])
def test_guided_and_deconv_hand_made(net, method, peer):
    x = torch.randn(4, *((5,) if isinstance(net[0], nn.Linear) else (1, 8, 8)),
                    dtype=torch.float64)
    target = torch.tensor([0, 1, 2, 1])
    f, params = fattr.functional(net)
    theirs = peer(net).attribute(x, target=target)
    torch.testing.assert_close(method(f)(params, x, target), theirs, **TOL)
    torch.testing.assert_close(method(f, mode="hook")(params, x, target), theirs, **TOL)


@pytest.mark.slow
@pytest.mark.parametrize("arch", ["resnet18", "vgg11_bn"])
def test_guided_and_deconv_real_architectures(arch, vgg):
    net = resnet18().double() if arch == "resnet18" else vgg
    x, _ = images()
    f, params = fattr.functional(net)
    for method, peer in [(fattr.guided_backprop, ca.GuidedBackprop),
                         (fattr.deconvnet, ca.Deconvolution)]:
        ours = method(f)(params, x, 3)
        assert ours.abs().max() > 0
        torch.testing.assert_close(ours, peer(net).attribute(x, target=3), **TOL)


@pytest.mark.parametrize("softmax", [False, True], ids=["logits", "softmax"])
@pytest.mark.parametrize("act", ACTIVATIONS, ids=lambda a: type(a).__name__)
def test_deeplift_every_captum_nonlinearity(act, softmax):
    net = head(act, softmax)
    x = torch.randn(1, 1, 4, 4, dtype=torch.float64)  # one example: captum's softmax mean
    base = 0.3 * torch.randn_like(x)                     # spans the whole batch
    f, params = fattr.functional(net)
    ours = fattr.deeplift(f)(params, x, 2, baseline=base)
    torch.testing.assert_close(ours, ca.DeepLift(net).attribute(x, base, target=2), **TOL)


def test_deeplift_conv_net_with_max_pool():
    net = small_cnn()  # conv, BatchNorm, in-place ReLU, max pool, ReLU, average pool
    x = torch.randn(3, 1, 8, 8, dtype=torch.float64)
    base = 0.2 * torch.randn_like(x)
    f, params = fattr.functional(net)
    ours = fattr.deeplift(f)(params, x, torch.tensor([0, 3, 1]), baseline=base)
    theirs = ca.DeepLift(captum_friendly(net)).attribute(x, base, target=torch.tensor([0, 3, 1]))
    torch.testing.assert_close(ours, theirs, **TOL)


def test_captum_bug_adjacent_nonlinear_modules():
    """captum: ReLU fed straight into MaxPool loses completeness; fattr keeps it."""
    net = small_cnn()
    x = torch.randn(2, 1, 8, 8, dtype=torch.float64)
    base = 0.2 * torch.randn_like(x)
    _, delta = ca.DeepLift(net).attribute(x, base, target=1, return_convergence_delta=True)
    assert delta.abs().max() > 1e-4
    f, params = fattr.functional(net)
    ours = fattr.deeplift(f)(params, x, 1, baseline=base)
    assert fattr.completeness_gap(f, params, x, ours, 1, base).abs().max() < 1e-12


def test_captum_bug_reused_module_and_overlapping_pool():
    net = resnet18().double()
    x, base = images(batch=1)
    with pytest.raises(RuntimeError, match="used more than once"):  # captum issue 1082
        ca.DeepLift(net).attribute(x, base, target=0)
    _, delta = ca.DeepLift(captum_friendly(net)).attribute(x, base, target=0,
                                                           return_convergence_delta=True)
    assert delta.abs().max() > 1e-3  # max_unpool drops overlapping windows


@pytest.mark.slow
@pytest.mark.parametrize("arch", ["resnet18", "vgg11_bn"])
def test_deeplift_real_architectures(arch, vgg):
    net = resnet18().double() if arch == "resnet18" else vgg
    x, base = images()
    f, params = fattr.functional(net)
    ours = fattr.deeplift(f)(params, x, torch.tensor([3, 7]), baseline=base)
    with accumulating_max_pool():
        theirs = ca.DeepLift(captum_friendly(net)).attribute(x, base, target=torch.tensor([3, 7]))
    assert ours.abs().max() > 0
    torch.testing.assert_close(ours, theirs, **TOL)
    gap = fattr.completeness_gap(f, params, x, ours, torch.tensor([3, 7]), base)
    assert gap.abs().max() < 1e-12


@pytest.mark.parametrize("net", [mlp(), head(nn.Tanh())], ids=["mlp", "tanh"])
def test_deeplift_shap_hand_made(net):
    shape = (5,) if isinstance(net[0], nn.Linear) else (1, 4, 4)
    x = torch.randn(3, *shape, dtype=torch.float64)
    pool = torch.randn(4, *shape, dtype=torch.float64)
    target = torch.tensor([0, 2, 1])
    f, params = fattr.functional(net)
    theirs = ca.DeepLiftShap(net).attribute(x, pool, target=target)
    torch.testing.assert_close(fattr.deeplift_shap(f)(params, x, target, baselines=pool),
                               theirs, **TOL)
    torch.testing.assert_close(fattr.deeplift_shap(f, batch_size=4)(params, x, target,
                                                                    baselines=pool),
                               theirs, **TOL)


def test_deeplift_shap_softmax_is_per_example():
    """captum's softmax mean spans its expanded batch; fattr's equals captum one pair at a time."""
    net = head(nn.ReLU(), softmax=True)
    x = torch.randn(2, 1, 4, 4, dtype=torch.float64)
    pool = torch.randn(3, 1, 4, 4, dtype=torch.float64)
    f, params = fattr.functional(net)
    ours = fattr.deeplift_shap(f)(params, x, 1, baselines=pool)
    pairs = torch.stack([torch.cat([ca.DeepLift(net).attribute(x[i:i + 1], pool[n:n + 1],
                                                               target=1) for i in range(2)])
                         for n in range(3)])
    torch.testing.assert_close(ours, pairs.mean(0), **TOL)


@pytest.mark.slow
@pytest.mark.parametrize("arch", ["resnet18", "vgg11_bn"])
def test_deeplift_shap_real_architectures(arch, vgg):
    net = resnet18().double() if arch == "resnet18" else vgg
    x, _ = images(batch=1)
    pool = 0.1 * torch.randn(2, 3, 32, 32, dtype=torch.float64)
    f, params = fattr.functional(net)
    ours = fattr.deeplift_shap(f)(params, x, 5, baselines=pool)
    with accumulating_max_pool():
        theirs = ca.DeepLiftShap(captum_friendly(net)).attribute(x, pool, target=5)
    torch.testing.assert_close(ours, theirs, **TOL)


def test_captum_friendly_is_the_same_function():
    net = resnet18().double()
    x, _ = images(batch=1)
    torch.testing.assert_close(captum_friendly(net)(x), net(x))
    torch.testing.assert_close(dedupe_relus(net)(x), net(x))
