"""fattr.registry names every public attribution constructor, and its columns are true."""

from __future__ import annotations

import inspect

import pytest
import torch

import fattr
from fattr.registry import FAMILIES, METHODS, TAKES, MethodInfo

# Public callables of fattr that are not attribution constructors, and why.
NOT_METHODS = {
    "FattrError": "exception", "FattrTypeError": "exception",
    "functional": "model function", "per_example": "model function",
    "trainable": "params helper", "rewrite": "module-tree rewriting",
    "to_layer": "model transform", "tokens_to_grid": "CAM reshape",
    "completeness_gap": "measure", "fullgrad_terms": "FullGrad's parts",
    "xrai_segments": "XRAI's segmentation", "explain": "uses the registry",
}


def public_callables() -> set[str]:
    return {name for name in dir(fattr) if not name.startswith("_")
            and callable(getattr(fattr, name))
            and (not inspect.ismodule(getattr(fattr, name)) or name == "lrp")}


def test_every_public_constructor_is_registered_and_nothing_else():
    assert set(METHODS) == public_callables() - set(NOT_METHODS)
    assert set(NOT_METHODS) <= public_callables()
    for name, info in METHODS.items():
        assert isinstance(info, MethodInfo) and info.name == name
        assert info.family in FAMILIES and info.takes in TAKES, info
        public = getattr(fattr, name)
        assert info.build is public or (name == "lrp" and info.build is fattr.lrp.method.lrp)
    assert {info.family for info in METHODS.values()} == set(FAMILIES)


def test_entries_are_frozen_data():
    with pytest.raises(AttributeError):
        METHODS["saliency"].family = "cam"


def _positional(info, f):
    return {"model": (f,), "model_layer": (f, "2"), "model_layer_neuron": (f, "2", 0),
            "model_window": (f, (1, 2, 2))}[info.takes]


@pytest.mark.parametrize("name", [n for n, m in METHODS.items() if not m.takes.startswith("attr")])
def test_needs_module_is_true(name):
    """A plain g(params, x) works for methods that do not need a module, and is refused with
    an error that says so by the others."""
    info = METHODS[name]
    net = torch.nn.Sequential(torch.nn.Conv2d(1, 2, 3, padding=1), torch.nn.ReLU(),
                              torch.nn.Conv2d(2, 2, 3, padding=1), torch.nn.Flatten(),
                              torch.nn.Linear(2 * 36, 3)).double().eval()
    f, params = fattr.functional(net)
    plain = lambda p, x: f(p, x)
    x = torch.rand(2, 1, 6, 6, dtype=torch.float64)
    call = {"generator": torch.Generator().manual_seed(0)} if info.stochastic else {}
    if name in ("shapley_values",):
        call["feature_mask"] = torch.arange(36).reshape(6, 6) // 9
    if not info.needs_module:
        a = info.build(*_positional(info, plain))(params, x, 1, **call)
        assert torch.isfinite(a).all()
        return
    with pytest.raises(fattr.FattrTypeError, match="module"):
        info.build(*_positional(info, plain))(params, x, 1, **call)
