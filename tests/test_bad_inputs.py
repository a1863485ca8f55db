"""One table of bad inputs run against every public method of the registry.

For each method (built with `fattr.explain.build`'s defaults on a small CNN with BatchNorm) and
each bad input that applies to it: the error type, that the message names the method and the
argument, and that the user's model is bit-identical afterwards (tensors, flags, hooks, types).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pytest
import torch
from torch import nn

import fattr
from fattr.explain import GUIDED, INNER, build
from fattr.registry import METHODS
from tests.conftest import assert_unchanged, small_cnn, state_snapshot

pytest.importorskip("skimage")  # xrai's segmentation; a test extra

X = torch.randn(3, 1, 8, 8, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
TARGET = torch.tensor([0, 1, 3])
QUADRANTS = torch.arange(4).reshape(2, 2).repeat_interleave(4, 0).repeat_interleave(4, 1)
OPTIONS = {"neuron_conductance": {"neuron": 0}, "shapley_values": {"feature_mask": QUADRANTS}}


def _built_on(method: str, f: Callable, params: dict) -> tuple[Callable, dict]:
    """The method with `fattr.explain`'s defaults, and the keyword arguments of its call."""
    return build(f, params, X, method, **OPTIONS.get(method, {}))


@dataclass(frozen=True)
class Bad:
    """A bad input: how to call with it, the error it must raise, what the message must say."""

    name: str
    call: Callable[[Callable, dict, dict], Any]  # (attr, params, call kwargs) -> result
    error: type[Exception]
    says: str                                  # a regex the message must contain
    applies: Callable[[str], bool] = lambda method: True


def _takes(argument: str) -> Callable[[str], bool]:
    """The methods whose call takes `argument` (seen on a built attribution function)."""
    def check(method: str) -> bool:
        attr, _ = _built(method, small_cnn())
        keywords = getattr(attr, "contract", None)
        accepted = keywords.keywords if keywords is not None else None
        return accepted is not None and argument in accepted
    return check


def _built(method: str, net: nn.Module) -> tuple[Callable, dict]:
    return _built_on(method, *fattr.functional(net))


BAD = [
    Bad("misspelled params key",
        lambda attr, p, kw: attr({**p, "0.weigth": p["0.weight"]}, X, TARGET, **kw),
        fattr.FattrError, r"params has 1 key\(s\).*'0\.weigth' \(did you mean '0\.weight'\?\)"),
    Bad("params is the module",
        lambda attr, p, kw: attr(small_cnn(), X, TARGET, **kw), TypeError, "params"),
    Bad("x is not a tensor", lambda attr, p, kw: attr(p, X.tolist(), TARGET, **kw),
        TypeError, "x must be a torch.Tensor"),
    Bad("x holds NaN", lambda attr, p, kw: attr(p, X.clone().index_fill_(0, torch.tensor([1]),
                                                                          float("nan")),
                                                TARGET, **kw),
        fattr.FattrError, "x contains NaN or Inf"),
    Bad("target out of range", lambda attr, p, kw: attr(p, X, 7, **kw), fattr.FattrError,
        "target 7 is out of range"),
    Bad("target of the wrong length", lambda attr, p, kw: attr(p, X, TARGET[:2], **kw),
        fattr.FattrError, r"one index per example, shape \(3,\)"),
    Bad("captum's spelling of an argument", lambda attr, p, kw: attr(p, X, TARGET, n_steps=5,
                                                                      **kw),
        TypeError, "unexpected argument n_steps="),
    Bad("model_args of the wrong type", lambda attr, p, kw: attr(p, X, TARGET, model_args=1,
                                                                  **kw),
        TypeError, "model_args must be a tuple"),
    Bad("NaN baseline", lambda attr, p, kw: attr(p, X, TARGET, **{**kw, "baseline": float("nan")}),
        fattr.FattrError, "baseline contains NaN or Inf", _takes("baseline")),
    Bad("generator of the wrong type",
        lambda attr, p, kw: attr(p, X, TARGET, **{**kw, "generator": 0}),
        TypeError, "generator must be a torch.Generator", _takes("generator")),
]


CASES = [pytest.param(method, bad, id=f"{method}-{bad.name}")
         for method in sorted(METHODS) for bad in BAD if bad.applies(method)]


@pytest.mark.parametrize("method, bad", CASES)
def test_bad_input_is_refused_and_the_model_is_unchanged(method, bad):
    net = small_cnn()
    attr, kwargs = _built(method, net)
    params = fattr.functional(net)[1]
    before = state_snapshot(net)
    with pytest.raises(bad.error, match=bad.says) as raised:
        bad.call(attr, params, kwargs)
    assert str(raised.value).split(":")[0] in _named_by(method), str(raised.value)
    assert_unchanged(net, before)


def _named_by(method: str) -> tuple[str, ...]:
    """Who may name the error: the method, or for a wrapper the method it wraps."""
    takes = METHODS[method].takes
    inner = {"attr_fn": (INNER.get(method),), "attr_fn_cam": GUIDED}.get(takes, ())
    return (method, *inner, *(GUIDED if method == "guided_gradcam" else ()))


@pytest.mark.parametrize("method", sorted(METHODS))
def test_training_mode_is_refused_before_any_forward_pass(method):
    net = small_cnn().train()
    f, params = fattr.functional(net)
    attr, kwargs = _built_on(method, f, params)
    before = state_snapshot(net)
    with pytest.raises(fattr.FattrError, match=r"'1' \(BatchNorm2d\) is in training mode"):
        attr(params, X, TARGET, **kwargs)
    assert_unchanged(net, before)  # the running statistics did not move




@pytest.mark.parametrize("method", sorted(m for m, info in METHODS.items() if info.needs_module))
def test_a_plain_function_where_the_module_tree_is_needed(method):
    net = small_cnn()
    plain = lambda params, x: torch.func.functional_call(net, params, (x,))
    with pytest.raises(TypeError, match=rf"{method}: .*fattr\.functional"):
        _construct(method, plain)


@pytest.mark.parametrize("method", sorted(m for m, info in METHODS.items()
                                          if info.takes.startswith("model")))
def test_the_module_itself_where_a_model_function_is_expected(method):
    with pytest.raises(TypeError, match=rf"{method}: got the module Sequential itself.*"
                                        r"fattr\.functional\(model\)"):
        _construct(method, small_cnn())


def _construct(method: str, f: Any) -> Callable:
    info = METHODS[method]
    positional = {"model": (f,), "model_layer": (f, "4"), "model_layer_neuron": (f, "4", 0),
                  "model_window": (f, (1, 2, 2))}[info.takes]
    return info.build(*positional)
