"""DeepLIFT: exact completeness, modules used twice, functional activations, every rule form."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import fattr
from fattr.errors import FattrError
from tests.conftest import resnet18, small_cnn


class Twice(nn.Module):
    """One ReLU module applied at two places (captum issue 1082)."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(2)
        self.a, self.b, self.c = nn.Linear(5, 8), nn.Linear(8, 8), nn.Linear(8, 3)
        self.relu = nn.ReLU()

    def forward(self, x):
        return self.c(self.relu(self.b(self.relu(self.a(x)))))


class Calls(nn.Module):
    """A net whose nonlinearities are functional calls `call(v)`."""

    def __init__(self, call, pool=None):
        super().__init__()
        torch.manual_seed(4)
        self.conv, self.lin = nn.Conv2d(1, 3, 3, padding=1), nn.Linear(3 * 16, 4)
        self.call, self.pool = call, pool or (lambda v: F.avg_pool2d(v, 2))

    def forward(self, x):
        return self.lin(self.pool(self.call(self.conv(x))).flatten(1))


class Modules(Calls):
    def __init__(self, module, pool=None):
        super().__init__(module, pool)


def gap(net, x, base, target, attr=None):
    f, params = fattr.functional(net)
    attr = fattr.deeplift(f)(params, x, target, baseline=base) if attr is None else attr
    return fattr.completeness_gap(f, params, x, attr, target, base)


@pytest.mark.parametrize("net", [Twice(), small_cnn()], ids=["relu_twice", "cnn"])
def test_exactly_complete_on_relu_nets(net):
    shape = (5,) if isinstance(net, Twice) else (1, 8, 8)
    x = torch.randn(6, *shape, dtype=torch.float64)
    base = torch.randn_like(x)
    g = gap(net.double().eval(), x, base, torch.tensor([0, 1, 2, 0, 1, 2]))
    assert g.abs().max() < 1e-13


def test_reused_module_equals_two_separate_modules():
    net = Twice().double()
    separate = nn.Sequential(net.a, nn.ReLU(), net.b, nn.ReLU(), net.c)
    x, base = torch.randn(4, 5, dtype=torch.float64), torch.randn(4, 5, dtype=torch.float64)
    f, params = fattr.functional(net)
    g, params2 = fattr.functional(separate)
    torch.testing.assert_close(fattr.deeplift(f)(params, x, 1, baseline=base),
                               fattr.deeplift(g)(params2, x, 1, baseline=base))


@pytest.mark.slow
def test_resnet18_complete_in_float64():
    net = resnet18().double()
    x = torch.randn(2, 3, 32, 32, dtype=torch.float64)
    assert gap(net, x, 0.0, torch.tensor([1, 9])).abs().max() < 1e-12


FUNCTIONAL = {
    "F.relu": (F.relu, nn.ReLU()), "torch.relu": (torch.relu, nn.ReLU()),
    "Tensor.relu": (lambda v: v.relu(), nn.ReLU()),
    "F.relu inplace": (lambda v: F.relu(v, inplace=True), nn.ReLU()),
    "torch.relu_": (lambda v: torch.relu_(v), nn.ReLU()),
    "Tensor.relu_": (lambda v: v.relu_(), nn.ReLU()),
    "F.leaky_relu": (lambda v: F.leaky_relu(v, 0.3), nn.LeakyReLU(0.3)),
    "F.leaky_relu_": (lambda v: F.leaky_relu_(v, 0.3), nn.LeakyReLU(0.3)),
    "F.elu": (lambda v: F.elu(v, alpha=0.5), nn.ELU(0.5)),
    "F.elu inplace": (lambda v: F.elu(v, 0.5, True), nn.ELU(0.5)),
    "F.sigmoid": (F.sigmoid, nn.Sigmoid()), "torch.sigmoid_": (torch.sigmoid_, nn.Sigmoid()),
    "Tensor.tanh": (lambda v: v.tanh(), nn.Tanh()), "F.tanh": (F.tanh, nn.Tanh()),
    "Tensor.tanh_": (lambda v: v.tanh_(), nn.Tanh()),
    "F.softplus": (lambda v: F.softplus(v, beta=2.0, threshold=1.0), nn.Softplus(2.0, 1.0)),
    "F.gelu": (lambda v: F.gelu(v, approximate="tanh"), nn.GELU("tanh")),
    "F.silu": (F.silu, nn.SiLU()), "F.silu inplace": (lambda v: F.silu(v, True), nn.SiLU()),
    "F.softmax": (lambda v: F.softmax(v, dim=1), nn.Softmax(1)),
    "torch.softmax": (lambda v: torch.softmax(v, 1), nn.Softmax(1)),
    "Tensor.softmax": (lambda v: v.softmax(-1), nn.Softmax(-1)),
}


@pytest.mark.parametrize("name", list(FUNCTIONAL))
def test_functional_activation_gets_the_rule(name):
    call, module = FUNCTIONAL[name]
    functional, modular = Calls(call).double().eval(), Modules(module).double().eval()
    x, base = torch.randn(3, 1, 8, 8, dtype=torch.float64), torch.full((3, 1, 8, 8), 0.3)
    f, params = fattr.functional(functional)
    g, _ = fattr.functional(modular)
    ours = fattr.deeplift(f)(params, x, 2, baseline=base.double())
    torch.testing.assert_close(ours, fattr.deeplift(g)(params, x, 2, baseline=base.double()))
    plain = (x - base) * fattr.saliency(f, abs=False)(params, x, 2)
    assert not torch.allclose(ours, plain)  # the rule changed something: not a silent gradient
    if "softmax" not in name:  # elementwise rescale is complete (GELU and SiLU included)
        assert gap(functional, x, base.double(), 2, ours).abs().max() < 1e-12


@pytest.mark.parametrize("pool", [
    lambda v: F.max_pool2d(v, 3, 2, 1), lambda v: torch.max_pool2d(v, 3, 2, 1),
    nn.MaxPool2d(3, 2, 1)], ids=["F.max_pool2d", "torch.max_pool2d", "nn.MaxPool2d"])
def test_max_pool_forms_and_overlapping_windows(pool):
    class Pooled(Calls):
        def forward(self, x):
            return self.lin(self.pool(self.call(self.conv(x))).flatten(1)[:, :48])

    torch.manual_seed(0)
    net = Pooled(nn.ReLU(), pool).double().eval()
    reference = Pooled(nn.ReLU(), nn.MaxPool2d(3, 2, 1)).double().eval()
    x = torch.randn(3, 1, 8, 8, dtype=torch.float64)
    base = 0.2 * torch.randn_like(x)
    f, params = fattr.functional(net)
    ours = fattr.deeplift(f)(params, x, 1, baseline=base)
    assert fattr.completeness_gap(f, params, x, ours, 1, base).abs().max() < 1e-12
    g, _ = fattr.functional(reference)
    torch.testing.assert_close(ours, fattr.deeplift(g)(params, x, 1, baseline=base))


@pytest.mark.parametrize("dims", [1, 3])
def test_max_pool_1d_and_3d_complete(dims):
    torch.manual_seed(5)
    conv = nn.Conv1d if dims == 1 else nn.Conv3d
    pool = nn.MaxPool1d(2) if dims == 1 else nn.MaxPool3d(2)
    net = nn.Sequential(conv(1, 2, 3, padding=1), nn.ReLU(), pool, nn.Flatten(),
                        nn.LazyLinear(2)).double()
    x = torch.randn(2, 1, *([4] * dims), dtype=torch.float64)
    net(x)
    net.eval()
    base = torch.randn_like(x)
    assert gap(net, x, base, 0).abs().max() < 1e-12


def test_softmax_rule_is_per_example_and_shift_invariant():
    torch.manual_seed(6)
    net = nn.Sequential(nn.Linear(4, 5), nn.Softmax(dim=1)).double().eval()
    f, params = fattr.functional(net)
    x = torch.randn(3, 4, dtype=torch.float64)
    attr = fattr.deeplift(f)
    alone = attr(params, x[:1], 0, baseline=0.0)
    torch.testing.assert_close(attr(params, x, 0, baseline=0.0)[:1], alone)
    # the multipliers at the softmax input sum to zero along the softmax axis
    m = fattr.deeplift(fattr.functional(nn.Softmax(dim=1))[0])({}, x, 2, baseline=0.0) / x
    torch.testing.assert_close(m.sum(1), torch.zeros(3, dtype=torch.float64))


def test_eps_falls_back_to_the_gradient():
    net = nn.Sequential(nn.Linear(3, 3), nn.Sigmoid(), nn.Linear(3, 1)).double().eval()
    f, params = fattr.functional(net)
    x = torch.randn(2, 3, dtype=torch.float64)
    near = x + 1e-9
    fallback = fattr.deeplift(f, eps=1e-6)(params, x, None, baseline=near)
    gradient = (x - near) * fattr.saliency(f, abs=False)(params, x, None)
    torch.testing.assert_close(fallback, gradient, rtol=1e-6, atol=1e-18)


def test_unsupported_forms_raise():
    torch.manual_seed(0)
    with pytest.raises(FattrError, match="deeplift: .*MaxPool2d.* has no rule: max pooling "
                                         "that returns its indices"):
        net = nn.Sequential(nn.MaxPool2d(2, return_indices=True))
        f, params = fattr.functional(net)
        fattr.deeplift(f)(params, torch.randn(1, 1, 4, 4), None)
    for call, match in [(lambda v: F.max_pool2d(v, 2, return_indices=True)[0],
                         "deeplift: the model calls max_pool2d_with_indices functionally"),
                        (lambda v: F.softmax(v), "softmax without an explicit dim")]:
        f, params = fattr.functional(Calls(call).double().eval())
        with pytest.raises(FattrError, match=match):
            fattr.deeplift(f)(params, torch.randn(2, 1, 8, 8, dtype=torch.float64), 0)


def test_deeplift_shap_errors_name_deeplift_shap():
    f, params = fattr.functional(Calls(lambda v: F.softmax(v)).double().eval())
    with pytest.raises(FattrError, match="deeplift_shap: the model calls Softmax"):
        fattr.deeplift_shap(f)(params, torch.randn(2, 1, 8, 8, dtype=torch.float64), 0)


def test_fused_attention_is_written_out_with_the_softmax_rule():
    # F.scaled_dot_product_attention (timm's and HuggingFace's attention) equals the same
    # attention written with matmul and softmax, whose softmax DeepLIFT's rule reaches
    def fused(v):  # 3 tokens (the channels) of 64 features
        q = v.flatten(2)
        out = F.scaled_dot_product_attention(q, q.flip(-1), q, is_causal=True)
        return out.reshape(v.shape)

    def explicit(v):
        q = v.flatten(2)
        scores = q @ q.flip(-1).transpose(-2, -1) / math.sqrt(q.shape[-1])
        causal = torch.ones(3, 3, dtype=torch.bool).tril()
        out = torch.softmax(scores.masked_fill(~causal, float("-inf")), -1) @ q
        return out.reshape(v.shape)

    x = torch.randn(3, 1, 8, 8, dtype=torch.float64)
    results = []
    for call in (fused, explicit):
        f, params = fattr.functional(Calls(call).double().eval())
        results.append(fattr.deeplift(f)(params, x, 1, baseline=0.1))
    torch.testing.assert_close(results[0], results[1])
    plain = x * fattr.saliency(f, abs=False)(params, x, 1)
    assert (results[0] - plain).abs().max() > 1e-3
