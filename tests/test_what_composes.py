"""Every cell of the registry's composition table (docs/composition.md), checked against the
method itself: vmap over targets, gradients with respect to the params and (where marked) to x
against finite differences, vmap over per-example functions, and tuple inputs. The
torch.compile column is checked in tests/test_compile.py.

Models: a two-channel float64 CNN (tanh for smooth finite differences; ReLU for the rules
family, whose rules act on ReLUs) and the same network taking its two channels as a tuple.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from torch import nn
from torch.func import grad, vmap

import fattr
from fattr.explain import build
from fattr.registry import METHODS, composition_table

pytest.importorskip("skimage")  # xrai's segmentation; a test extra

X = torch.randn(2, 2, 6, 6, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
TARGET = torch.tensor([0, 2])
TARGETS = torch.tensor([[0, 2], [1, 1]])
MASK = torch.arange(4).reshape(2, 2).repeat_interleave(3, 0).repeat_interleave(3, 1)
OPTIONS = {"neuron_conductance": {"neuron": 0}, "shapley_values": {"feature_mask": MASK},
           "occlusion": {"window": (1, 2, 2), "stride": (1, 2, 2)},
           "xrai": {"resize": None, "min_size": 4, "scales": (20,), "min_pixels": 2}}
LAYER = "conv2"


class Net(nn.Module):
    def __init__(self, act: type[nn.Module]):
        super().__init__()
        torch.manual_seed(0)
        self.conv1, self.act1 = nn.Conv2d(2, 4, 3, padding=1), act()
        self.conv2, self.act2 = nn.Conv2d(4, 4, 3, padding=1), act()
        self.head = nn.Sequential(nn.AdaptiveAvgPool2d(2), nn.Flatten(), nn.Linear(16, 3))

    def forward(self, x):
        return self.head(self.act2(self.conv2(self.act1(self.conv1(x)))))


class Two(nn.Module):
    """The same network with its two channels as two inputs."""

    def __init__(self, net: nn.Module):
        super().__init__()
        self.net = net

    def forward(self, a, b):
        return self.net(torch.cat([a, b], 1))


def model(name: str) -> nn.Module:
    act = nn.ReLU if METHODS[name].family in ("rules", "guided") else nn.Tanh
    return Net(act).double().eval()


def built(name: str, f: Callable, params: dict, x, layer: str = LAYER):
    """The method with explain's defaults (a layer for layer methods), its call keywords."""
    layered = METHODS[name].takes.startswith("model_layer") or name in ("guided", "xrai")
    options = dict(OPTIONS.get(name, {}))
    if name == "occlusion" and isinstance(x, tuple):
        options.update(window=((1, 2, 2),) * 2, stride=((1, 2, 2),) * 2)
    if name == "shapley_values" and isinstance(x, tuple):
        options.update(feature_mask=(MASK, MASK))  # ids shared across inputs: one feature
    return build(f, params, X if not isinstance(x, tuple) else x, name,
                 **({"layer": layer} if layered else {}), **options)


def constructed(name: str, f: Callable) -> Callable:
    """The method built directly (no probing pass, so also on a per-example function), with
    the same arguments as `built`."""
    info, options = METHODS[name], OPTIONS.get(name, {})
    if info.takes == "attr_fn":
        inner = fattr.saliency(f)
        return info.build(inner, **({k: v for k, v in options.items()} if name == "xrai"
                                    else {}))
    if info.takes == "attr_fn_cam":
        return info.build(fattr.guided_backprop(f), fattr.gradcam(f, LAYER))
    positional = {"model": (f,), "model_layer": (f, LAYER), "model_layer_neuron": (f, LAYER, 0),
                  "model_window": (f, (1, 2, 2), (1, 2, 2))}[info.takes]
    return info.build(*positional)


def call(name: str, attr: Callable, kwargs: dict, params: dict, x, target):
    if METHODS[name].stochastic:
        kwargs = {**kwargs, "generator": torch.Generator().manual_seed(1)}
    return attr(params, x, target, **kwargs)


def as_one(result) -> torch.Tensor:
    return torch.cat(result, 1) if isinstance(result, tuple) else result


def finite_difference_check(loss: Callable, at: dict | torch.Tensor) -> None:
    """<grad loss, v> by torch.func.grad equals the central difference along a random v."""
    tensors = at if isinstance(at, dict) else {"x": at}
    wrap = (lambda t: t) if isinstance(at, dict) else (lambda t: t["x"])
    g = grad(lambda t: loss(wrap(t)))(tensors)
    gen = torch.Generator().manual_seed(5)
    v = {k: torch.randn(t.shape, dtype=t.dtype, generator=gen) for k, t in tensors.items()}
    h = 1e-6
    plus = loss(wrap({k: t + h * v[k] for k, t in tensors.items()}))
    minus = loss(wrap({k: t - h * v[k] for k, t in tensors.items()}))
    analytic = sum((g[k] * v[k]).sum() for k in tensors)
    torch.testing.assert_close(analytic, (plus - minus) / (2 * h), rtol=1e-3, atol=1e-9)


NAMES = sorted(METHODS)


@pytest.mark.parametrize("name", NAMES)
def test_vmap_over_targets_equals_one_call_per_target(name):
    f, params = fattr.functional(model(name))
    attr, kwargs = built(name, f, params, X)
    mapped = vmap(lambda t: call(name, attr, kwargs, params, X, t), randomness="same")(TARGETS)
    for k in range(len(TARGETS)):
        torch.testing.assert_close(mapped[k], call(name, attr, kwargs, params, X, TARGETS[k]))


@pytest.mark.parametrize("name", [n for n in NAMES if METHODS[n].grad_params])
def test_gradient_with_respect_to_the_params(name):
    f, params = fattr.functional(model(name))
    attr, kwargs = built(name, f, params, X)
    weights = fattr.trainable(f, params)
    finite_difference_check(lambda w: as_one(call(name, attr, kwargs, {**params, **w}, X,
                                                  TARGET)).square().sum(), weights)


@pytest.mark.parametrize("name", [n for n in NAMES if METHODS[n].grad_x])
def test_gradient_with_respect_to_x(name):
    f, params = fattr.functional(model(name))
    attr, kwargs = built(name, f, params, X)
    finite_difference_check(
        lambda x: as_one(call(name, attr, kwargs, params, x, TARGET)).square().sum(), X)


@pytest.mark.parametrize("name", [n for n in NAMES if METHODS[n].per_example])
def test_vmap_over_per_example_functions(name):
    f, params = fattr.functional(model(name))
    batched, kwargs = built(name, f, params, X)
    single, single_kwargs = constructed(name, fattr.per_example(f)), kwargs
    if METHODS[name].stochastic:  # runs under vmap with per-example draws
        mapped = vmap(lambda x, t: single(params, x, t, **single_kwargs),
                      randomness="different")(X, TARGET)
        assert mapped.shape == batched(params, X, TARGET, **kwargs).shape
        assert torch.isfinite(mapped).all()
        return
    mapped = vmap(lambda x, t: single(params, x, t, **single_kwargs))(X, TARGET)
    torch.testing.assert_close(mapped, batched(params, X, TARGET, **kwargs))


@pytest.mark.parametrize("name", NAMES)
def test_tuple_inputs(name):
    """On (channel 0, channel 1) of the same network, a method gives what it gives on the
    whole input (per-input results concatenated); stochastic methods draw per input, so only
    shapes are compared; the methods marked "no" refuse a tuple with a sentence."""
    net = model(name)
    f, params = fattr.functional(net)
    f2, params2 = fattr.functional(Two(net).eval())
    pair = (X[:, :1], X[:, 1:])
    layer = "net." + LAYER
    if not METHODS[name].tuple_inputs:
        with pytest.raises(fattr.FattrError, match=rf"{name}: .*tuple"):
            attr, kwargs = built(name, f2, params2, pair, layer)
            call(name, attr, kwargs, params2, pair, TARGET)
        return
    whole = call(name, *built(name, f, params, X), params, X, TARGET)
    split = call(name, *built(name, f2, params2, pair, layer), params2, pair, TARGET)
    if METHODS[name].stochastic or name in ("scorecam", "sscam", "smooth_gradcam_plus_plus"):
        # random draws per input, or a CAM masking the first input only: same shapes
        assert as_one(split).shape == whole.shape and torch.isfinite(as_one(split)).all()
        return
    torch.testing.assert_close(as_one(split), whole)


def test_the_docs_show_the_current_table():
    page = (Path(__file__).parents[1] / "docs" / "composition.md").read_text()
    assert composition_table() in page, "regenerate: python -m fattr.registry > the table"
