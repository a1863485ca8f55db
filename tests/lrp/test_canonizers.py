"""Canonizers: the canonized copy computes the model's function from the call's params, the
user's model is untouched, and execution order (not registration order) decides."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import fattr
from fattr.lrp import Epsilon, Flat, ZPlus, canonize
from tests.conftest import assert_unchanged, randomize_batchnorm, resnet18, state_snapshot
from tests.lrp.models import conv_net


def _transposed_net() -> nn.Module:
    torch.manual_seed(0)
    net = nn.Sequential(nn.ConvTranspose2d(4, 6, 3, stride=2, groups=2), nn.BatchNorm2d(6),
                        nn.ReLU(), nn.Flatten(), nn.Linear(6 * 9 * 9, 8), nn.BatchNorm1d(8),
                        nn.ReLU(), nn.Linear(8, 3)).double()
    randomize_batchnorm(net)
    return net.eval()


@pytest.mark.parametrize(("make", "shape"), [
    (conv_net, (3, 2, 8, 8)), (_transposed_net, (3, 4, 4, 4)),
    (lambda: resnet18().double(), (2, 3, 32, 32))])
def test_canonized_copy_computes_the_model_from_the_calls_params(make, shape):
    net = make()
    before = state_snapshot(net)
    f, params = fattr.functional(net)
    canonical = canonize(net)
    x = torch.randn(*shape, dtype=torch.float64)
    out = torch.func.functional_call(canonical, params, (x,))
    torch.testing.assert_close(out, net(x), rtol=1e-10, atol=1e-10)
    # other params (BatchNorm statistics included) are folded in at call time
    changed = {k: v + 0.1 if v.is_floating_point() else v for k, v in params.items()}
    torch.testing.assert_close(torch.func.functional_call(canonical, changed, (x,)),
                               f(changed, x), rtol=1e-10, atol=1e-10)
    assert_unchanged(net, before)
    assert {n for n, _ in canonical.named_parameters()} == {n for n, _ in net.named_parameters()}


def test_resnet_residual_adds_become_sum_modules():
    canonical = canonize(resnet18())
    sums = [n for n, m in canonical.named_modules() if isinstance(m, fattr.lrp.Sum)]
    assert len(sums) == 8 and sums[0] == "layer1.0.residual_sum"
    assert not any(isinstance(m, nn.ReLU) and m.inplace for m in canonical.modules())


class Misordered(nn.Module):
    """A BatchNorm registered right after a conv, but applied to another tensor."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(2, 3, 3, padding=1)
        self.bn = nn.BatchNorm2d(2)
        self.head = nn.Linear(3 * 4 * 4, 2)

    def forward(self, x):
        return self.head(self.conv(self.bn(x)).flatten(1))


def test_batchnorm_not_following_its_layer_in_execution_raises():
    net = Misordered().double().eval()
    f, params = fattr.functional(net)
    x = torch.randn(2, 2, 4, 4, dtype=torch.float64)
    with pytest.raises(fattr.FattrError, match="BatchNorm 'bn' follows 'conv'"):
        fattr.lrp(f, "epsilon")(params, x, 0)
    # without canonization the BatchNorm keeps its forward and passes relevance (zennit's Pass)
    relevance = fattr.lrp(f, "epsilon", canonize=False)(params, x, 0)
    assert relevance.shape == x.shape and torch.isfinite(relevance).all()


def test_batchnorm_without_running_statistics_cannot_be_folded():
    net = nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4, track_running_stats=False),
                        nn.Linear(4, 2)).eval()
    f, _ = fattr.functional(net)
    with pytest.raises(fattr.FattrError, match="no running statistics"):
        fattr.lrp(f)


class LateRegistered(nn.Module):
    """Registers its head before its stem; the stem runs first."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.head = nn.Linear(12, 3)
        self.stem = nn.Linear(5, 12)

    def forward(self, x):
        return self.head(torch.relu(self.stem(x)))


def test_first_layer_is_the_first_to_run():
    net = LateRegistered().double().eval()
    f, params = fattr.functional(net)
    x = torch.randn(4, 5, dtype=torch.float64)
    ours = fattr.lrp(f, "epsilon_plus_flat")(params, x, 1)
    by_name = fattr.lrp(f, {"stem": Flat(), "head": Epsilon()})(params, x, 1)
    torch.testing.assert_close(ours, by_name)
    # Flat at the input: every input gets the same share of each stem unit's relevance
    torch.testing.assert_close(ours, ours[:, :1].expand_as(ours))


class Functional(nn.Module):
    """A CNN written with functional and in-place activations and an in-place residual add."""

    def __init__(self, functional: bool):
        super().__init__()
        torch.manual_seed(0)
        self.functional = functional
        self.conv1 = nn.Conv2d(2, 4, 3, padding=1)
        self.conv2 = nn.Conv2d(4, 4, 3, padding=1)
        self.relu = nn.ReLU(inplace=True)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.head = nn.Linear(4, 3)
        self.sum = fattr.lrp.Sum()

    def forward(self, x):
        if self.functional:
            h = F.relu(self.conv1(x), inplace=True)
            out = self.conv2(h)
            out += h
            out.relu_()
            return self.head(out.mean((2, 3)))
        h = self.relu(self.conv1(x))
        out = self.relu(self.sum(torch.stack([h, self.conv2(h)], -1)))
        return self.head(self.pool(out).flatten(1))


@pytest.mark.parametrize("composite", ["epsilon", "epsilon_plus_flat", "epsilon_alpha2_beta1"])
def test_functional_and_in_place_calls_get_the_rules_of_their_modules(composite):
    functional, modular = Functional(True).double().eval(), Functional(False).double().eval()
    f, params = fattr.functional(functional)
    g, _ = fattr.functional(modular)
    x = torch.randn(3, 2, 5, 5, dtype=torch.float64)
    torch.testing.assert_close(fattr.lrp(f, composite)(params, x, 2),
                               fattr.lrp(g, composite)(params, x, 2))
    plain = fattr.saliency(f, abs=False)(params, x, 2) * x
    assert (fattr.lrp(f, composite)(params, x, 2) - plain).abs().max() > 1e-6


def test_user_composite_by_name_type_and_first():
    net = conv_net()
    f, params = fattr.functional(net)
    x = torch.randn(2, 2, 8, 8, dtype=torch.float64)
    mapping = {fattr.lrp.first(nn.Conv2d): Flat(), nn.Conv2d: ZPlus(), "8": Epsilon(0.1)}
    ours = fattr.lrp(f, mapping)(params, x, 3)
    reference = fattr.lrp(f, {"0": Flat(), "4": ZPlus(), nn.Linear: Epsilon(0.1)})(params, x, 3)
    torch.testing.assert_close(ours, reference)
    assert (ours - fattr.lrp(f, "epsilon_plus_flat")(params, x, 3)).abs().max() > 1e-6
