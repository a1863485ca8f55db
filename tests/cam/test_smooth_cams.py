"""Smooth Grad-CAM++ and SS-CAM: torchcam parity, definitions, composition and reliability."""

from __future__ import annotations

from collections import OrderedDict

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor, nn

import fattr
from tests.conftest import (
    assert_unchanged,
    directional_derivative,
    resnet18,
    small_cnn,
    state_snapshot,
)

SMOOTH = "smooth_gradcam_plus_plus"


def seeded(seed: int = 7) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def torchcam_normalize(cam: Tensor) -> Tensor:
    """torchcam 0.5.0's _CAM._normalize over the spatial axes of (B, h, w) maps."""
    cam = cam - cam.amin((-2, -1), keepdim=True)
    return cam / (cam.amax((-2, -1), keepdim=True) + 1e-8)


class Draws:
    """Stands in for torchcam's noise distribution: hands out the given draws in order."""

    def __init__(self, draws: list[Tensor]):
        self.draws = list(draws)

    def sample(self, shape: torch.Size) -> Tensor:
        draw = self.draws.pop(0)
        assert tuple(draw.shape) == tuple(shape)
        return draw


def gap_net(seed: int = 3) -> nn.Module:
    """float64 CNN whose tapped 'relu2' feeds global average pooling and a tanh MLP head (the
    head weights are large so that squared gradients dwarf Grad-CAM++'s eps)."""
    torch.manual_seed(seed)
    net = nn.Sequential(OrderedDict(
        conv1=nn.Conv2d(1, 4, 3, padding=1), relu1=nn.ReLU(), conv2=nn.Conv2d(4, 6, 3, padding=1),
        relu2=nn.ReLU(), gap=nn.AdaptiveAvgPool2d(1), flat=nn.Flatten(), fc1=nn.Linear(6, 8),
        tanh=nn.Tanh(), fc2=nn.Linear(8, 4))).double()
    with torch.no_grad():
        net.fc2.weight.mul_(1000)
    return net.eval()


def smooth_net(seed: int = 1) -> nn.Module:
    """float64 CNN with smooth activations, for finite differences."""
    torch.manual_seed(seed)
    return nn.Sequential(OrderedDict(
        conv1=nn.Conv2d(1, 3, 3, padding=1), act1=nn.Tanh(), conv2=nn.Conv2d(3, 4, 3, padding=1),
        act2=nn.Softplus(), gap=nn.AdaptiveAvgPool2d(2), flat=nn.Flatten(),
        fc=nn.Linear(16, 3))).double().eval()


@pytest.fixture(scope="module")
def cnn():
    net = small_cnn()
    f, params = fattr.functional(net)
    x = torch.randn(3, 1, 12, 12, dtype=torch.float64, generator=seeded(0))
    return net, f, params, x, torch.tensor([0, 2, 3])


# ---------------------------------------------------------------- Smooth Grad-CAM++

def torchcam_smooth(net: nn.Module, layer: str, x: Tensor, targets: list[int],
                    draws: list[Tensor]) -> Tensor:
    from torchcam.methods import SmoothGradCAMpp

    with SmoothGradCAMpp(net, layer, num_samples=len(draws)) as extractor:
        extractor._distrib = Draws(draws)
        scores = net(x)
        return extractor(class_idx=targets, scores=scores)[0]


@pytest.mark.parametrize("model", ["gap_net", "resnet18"])
def test_smooth_gradcam_pp_torchcam_parity_without_noise(model):
    # Without noise, on a layer whose gradient is constant over positions (the last layer
    # before global pooling), torchcam's alpha equals the paper's; the heads make the eps
    # (fattr 1e-6, torchcam 1e-8) negligible.
    if model == "gap_net":
        net, layer = gap_net(), "relu2"
        x = torch.randn(3, 1, 10, 10, dtype=torch.float64, generator=seeded(1))
    else:
        net, layer = resnet18().double(), "layer4"
        with torch.no_grad():
            net.fc.weight.mul_(1000)
        x = torch.randn(2, 3, 64, 64, dtype=torch.float64, generator=seeded(1))
    targets = [1, 2, 3][:x.shape[0]]
    f, params = fattr.functional(net)
    peer = torchcam_smooth(net, layer, x, targets, [torch.zeros_like(x)] * 4)
    raw = fattr.smooth_gradcam_plus_plus(f, layer, stdev=0.0, upsample=False)(params, x, targets)
    assert peer.amax() > 0.99
    assert (torchcam_normalize(raw[:, 0]) - peer).abs().max() < 1e-5


def smooth_reference(net: nn.Module, layer: str, x: Tensor, targets: Tensor,
                     noise: Tensor) -> Tensor:
    """The paper's Smooth Grad-CAM++ in plain autograd, one noisy sample at a time."""
    module = net.get_submodule(layer)
    store = {}
    handle = module.register_forward_hook(lambda m, i, o: store.__setitem__("a", o))
    try:
        grads = []
        for e in noise:
            inputs = x + e
            score = net(inputs).gather(1, targets[:, None]).sum()
            grads.append(torch.autograd.grad(score, store["a"])[0])
        with torch.no_grad():
            net(x)
            a = store["a"]
    finally:
        handle.remove()
    g = torch.stack(grads)
    d1, d2, d3 = g.mean(0), g.pow(2).mean(0), g.pow(3).mean(0)
    alpha = d2 / (2 * d2 + a.sum((2, 3), keepdim=True) * d3 + 1e-6)
    alpha = torch.where(d2 != 0, alpha, torch.zeros_like(alpha))
    w = (F.relu(d1) * alpha).sum((2, 3), keepdim=True)
    return F.relu((w * a).sum(1, keepdim=True))


def test_smooth_gradcam_pp_matches_the_per_sample_definition(cnn):
    net, f, params, x, t = cnn
    noise = 0.3 * torch.randn((5, *x.shape), generator=seeded(), dtype=x.dtype)
    expected = smooth_reference(net, "4", x, t, noise)
    got = fattr.smooth_gradcam_plus_plus(f, "4", samples=5, upsample=False, batch_size=4)(
        params, x, t, generator=seeded())
    assert torch.allclose(got, expected, rtol=1e-10, atol=1e-12)
    plain = fattr.gradcam_plus_plus(f, "4", upsample=False)(params, x, t)
    assert (got - plain).abs().max() > 1e-4  # the noise matters


def test_smooth_gradcam_pp_without_noise_is_gradcam_plus_plus(cnn):
    _, f, params, x, t = cnn
    for layer in ("4", "5"):
        plain = fattr.gradcam_plus_plus(f, layer)(params, x, t)
        smooth = fattr.smooth_gradcam_plus_plus(f, layer, samples=3, stdev=0.0)(params, x, t)
        assert plain.abs().max() > 0
        assert torch.allclose(smooth, plain, rtol=1e-12, atol=1e-15)


# ---------------------------------------------------------------- SS-CAM

def torchcam_sscam(net: nn.Module, layer: str, x: Tensor, targets: list[int], samples: int,
                   stdev: float, seed: int) -> Tensor:
    """torchcam's SSCAM fed fattr's draws: per sample, the (C, H, W) blocks of every image."""
    from torchcam.methods import SSCAM

    with SSCAM(net, layer, batch_size=64, num_samples=samples, std=stdev) as extractor:
        with torch.no_grad():
            net(x)
        channels = extractor.hook_a[0].shape[1]
        g = seeded(seed)
        draws = [torch.stack([stdev * torch.randn((channels, *x.shape[2:]), generator=g,
                                                  dtype=x.dtype) for _ in range(len(x))])
                 for _ in range(samples)]
        extractor._distrib = Draws(draws)
        return extractor(class_idx=targets)[0]


@pytest.mark.parametrize("model", ["small_cnn", "resnet18"])
def test_sscam_torchcam_parity(model):
    # torchcam min-max normalizes before upsampling, fattr after: the same masks on a layer
    # at the input's size (small CNN, float64) and on resnet18's 2x2 layer4 at 64 px (float32).
    if model == "small_cnn":
        net, layer, samples = small_cnn(), "0", 3
        x = torch.randn(2, 1, 12, 12, dtype=torch.float64, generator=seeded(2))
    else:
        net, layer, samples = resnet18(), "layer4", 2
        x = torch.randn(1, 3, 64, 64, generator=seeded(2))
    targets = [0, 3][:x.shape[0]]
    f, params = fattr.functional(net)
    peer = torchcam_sscam(net, layer, x, targets, samples, 2.0, seed=5)
    raw = fattr.sscam(f, layer, samples=samples, upsample=False, batch_size=256)(
        params, x, targets, generator=seeded(5))
    assert peer.amax() > 0.99
    assert (torchcam_normalize(raw[:, 0]) - peer).abs().max() < 1e-5
    plain = fattr.scorecam(f, layer, upsample=False)(params, x, targets)
    assert (torchcam_normalize(plain[:, 0]) - peer).abs().max() > 1e-3  # the noise matters


def test_sscam_without_noise_is_scorecam(cnn):
    _, f, params, x, t = cnn
    plain = fattr.scorecam(f, "4", batch_size=7)(params, x, t)
    smooth = fattr.sscam(f, "4", samples=4, stdev=0.0, batch_size=9)(params, x, t)
    assert plain.abs().max() > 0
    assert torch.allclose(smooth, plain, rtol=1e-12, atol=1e-15)


def test_sscam_definition(cnn):
    net, f, params, x, t = cnn
    samples, stdev = 2, 0.5
    got = fattr.sscam(f, "4", samples=samples, stdev=stdev, relu=False, upsample=False,
                      batch_size=5)(params, x, t, generator=seeded())
    with torch.no_grad():
        a = net[:5](x)                                            # (B, C, 6, 6)
        masks = F.interpolate(a, size=x.shape[2:], mode="bilinear", align_corners=False)
        low = masks.amin((2, 3), keepdim=True)
        masks = (masks - low) / (masks.amax((2, 3), keepdim=True) - low + 1e-8)
        g = seeded()
        noise = torch.stack([torch.stack([stdev * torch.randn(masks.shape[1:], generator=g,
                                                              dtype=x.dtype)
                                          for _ in range(len(x))]) for _ in range(samples)])
        noisy = (masks + noise)[:, :, :, None]                   # (S, B, C, 1, H, W)
        out = net(torch.flatten(x[None, :, None] * noisy, 0, 2))  # rows (s, b, c)
        s = out.reshape(samples, *a.shape[:2], -1).gather(3, t[None, :, None, None].expand(
            samples, *a.shape[:2], 1))[..., 0].mean(0)
        expected = (s.softmax(1)[:, :, None, None] * a).sum(1, keepdim=True)
    assert torch.allclose(got, expected, rtol=1e-10, atol=1e-12)


# ---------------------------------------------------------------- composition

METHODS = {
    SMOOTH: lambda f, bs=None: fattr.smooth_gradcam_plus_plus(f, "4", samples=3,
                                                              batch_size=bs),
    "sscam": lambda f, bs=64: fattr.sscam(f, "4", samples=2, stdev=0.5, batch_size=bs),
}


@pytest.mark.parametrize("name", list(METHODS))
def test_same_generator_same_map_for_every_batch_size(name, cnn):
    _, f, params, x, t = cnn
    maps = [METHODS[name](f, bs)(params, x, t, generator=seeded()) for bs in (1, 5, None)]
    assert maps[0].abs().max() > 0
    for other in maps[1:]:
        assert torch.allclose(maps[0], other, rtol=1e-11, atol=1e-13)
    other_seed = METHODS[name](f)(params, x, t, generator=seeded(8))
    assert (other_seed - maps[0]).abs().max() > 1e-6


@pytest.mark.parametrize("name", list(METHODS))
def test_vmap_over_targets_equals_calls(name, cnn):
    _, f, params, x, _ = cnn
    attr = METHODS[name](f)
    ts = torch.tensor([[0, 1, 2], [3, 3, 0]])
    mapped = torch.func.vmap(lambda ps, xs, tt: attr(ps, xs, tt, generator=seeded()),
                             in_dims=(None, None, 0), randomness="same")(params, x, ts)
    calls = torch.stack([attr(params, x, tt, generator=seeded()) for tt in ts])
    assert mapped.shape == (2, 3, 1, 12, 12)
    assert torch.allclose(mapped, calls, rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("name", list(METHODS))
def test_per_example_model(name, cnn):
    _, f, params, x, t = cnn
    one = METHODS[name](fattr.per_example(f))(params, x[1], t[1], generator=seeded())
    batched = METHODS[name](f)(params, x[1:2], t[1:2], generator=seeded())
    assert one.shape == (1, 12, 12)
    assert torch.allclose(one, batched[0], rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("name", list(METHODS))
def test_grad_wrt_params_matches_finite_differences(name):
    net = smooth_net()
    f, params = fattr.functional(net)
    x = torch.randn(2, 1, 8, 8, dtype=torch.float64, generator=seeded(3))
    t = torch.tensor([0, 2])
    attr = {SMOOTH: fattr.smooth_gradcam_plus_plus(f, "act2", samples=3, batch_size=4),
            "sscam": fattr.sscam(f, "act2", samples=2, stdev=0.5, batch_size=7)}[name]
    weights = torch.randn(2, 1, 8, 8, dtype=torch.float64, generator=seeded(4))
    trainable = fattr.trainable(f, params)

    def loss(w: dict[str, Tensor]) -> Tensor:
        return (attr({**params, **w}, x, t, generator=seeded()) * weights).sum()

    analytic, numeric, grads = directional_derivative(loss, trainable, h=1e-5)
    assert grads["conv1.weight"].abs().max() > 0
    assert torch.allclose(analytic, numeric, rtol=1e-5, atol=1e-8)


# ---------------------------------------------------------------- reliability

@pytest.mark.parametrize("ctor", [fattr.smooth_gradcam_plus_plus, fattr.sscam])
def test_bad_arguments(ctor, cnn):
    _, f, _, _, _ = cnn
    name = ctor.__name__
    for bad in (0, -2, 1.5, True):
        with pytest.raises(fattr.FattrError, match=rf"{name}: samples must be an int >= 1, "
                                                   rf"got {bad!r}"):
            ctor(f, "4", samples=bad)
    for bad in (-0.1, float("nan"), "0.3"):
        with pytest.raises(fattr.FattrError, match=rf"{name}: stdev must be >= 0"):
            ctor(f, "4", stdev=bad)
    for bad in (0, -1, 2.0):
        with pytest.raises(fattr.FattrError, match=rf"{name}: batch_size must be a positive int"):
            ctor(f, "4", batch_size=bad)
    with pytest.raises(fattr.FattrError, match=rf"{name}: the model Sequential has no layer"):
        ctor(f, "44")
    with pytest.raises(fattr.FattrError, match=rf"{name}: relu must be True or False"):
        ctor(f, "4", relu="yes")
    if ctor is fattr.sscam:
        with pytest.raises(fattr.FattrError, match="sscam: align_corners must be True or False"):
            ctor(f, "4", align_corners=1)


@pytest.mark.parametrize("name", list(METHODS))
def test_model_unchanged_also_after_an_error(name, cnn):
    net, f, params, x, t = cnn
    before = state_snapshot(net)
    attr = METHODS[name](f, 4)
    attr(params, x, t, generator=seeded())
    assert_unchanged(net, before)
    with pytest.raises(fattr.FattrError, match=name):
        attr(params, x, lambda out: out[:, :2], generator=seeded())  # not one score per row
    assert_unchanged(net, before)
    with pytest.raises(fattr.FattrError, match=rf"{name}: .*out of range"):
        attr(params, x, 9)
    net.train()
    try:
        with pytest.raises(fattr.FattrError, match=rf"{name}: .*training mode"):
            attr(params, x, t)
    finally:
        net.eval()
    assert_unchanged(net, before)


@pytest.mark.parametrize("name", list(METHODS))
def test_empty_batch_and_shapes(name, cnn):
    _, f, params, x, t = cnn
    assert METHODS[name](f)(params, x[:0], t[:0]).shape == (0, 1, 12, 12)
    ctor = {SMOOTH: fattr.smooth_gradcam_plus_plus, "sscam": fattr.sscam}[name]
    small = ctor(f, "4", samples=2, upsample=False)(params, x, t, generator=seeded())
    assert small.shape == (3, 1, 6, 6) and small.dtype == torch.float64
