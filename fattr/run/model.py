"""The model of a command: `--model MODULE:CALLABLE`, `--model-kwargs JSON`, `--weights FILE`.

Every way these can be wrong (a module that does not import, a missing callable, bad JSON,
weights that do not fit) is a `FattrError` with one line that names the option.
"""

from __future__ import annotations

import importlib
import importlib.util
import json
import sys
from pathlib import Path
from typing import Any

import torch
from torch import nn

from fattr.errors import FattrError


def load_model(spec: str, model_kwargs: dict[str, Any] | None = None,
               weights: str | Path | None = None) -> nn.Module:
    """`CALLABLE(**model_kwargs)` from `MODULE` (a dotted module name, or a path to a .py file),
    with the state dict in `weights` loaded strictly (`torch.load(weights_only=True)`), in eval
    mode.

    >>> load_model("torchvision.models:resnet18", {"num_classes": 10}, "resnet18.pt")
    """
    source, _, name = spec.rpartition(":")
    if not source or not name:
        raise FattrError(f"--model: expected MODULE:CALLABLE (e.g. torchvision.models:resnet18 "
                         f"or path/to/models.py:make_model), got {spec!r}.")
    module = _import(source)
    factory = getattr(module, name, None)
    if not callable(factory):
        raise FattrError(f"--model: {source!r} has no callable {name!r}.")
    try:
        model = factory(**(model_kwargs or {}))
    except TypeError as error:
        raise FattrError(f"--model-kwargs: {spec}(**{model_kwargs}) failed: {error}") from None
    if not isinstance(model, nn.Module):
        raise FattrError(f"--model: {spec} returned {type(model).__name__}, not an nn.Module.")
    if weights is not None:
        _load_weights(model, Path(weights), spec)
    return model.eval()


def parse_json(text: str | None, option: str) -> dict[str, Any]:
    """A JSON object given on the command line (lists become tuples: windows, strides)."""
    if text is None:
        return {}
    try:
        value = json.loads(text)
    except json.JSONDecodeError as error:
        raise FattrError(f"{option}: not valid JSON ({error.msg} at column {error.colno}): "
                         f"{text!r}.") from None
    if not isinstance(value, dict):
        raise FattrError(f"{option}: expected a JSON object such as '{{\"steps\": 32}}', got "
                         f"{text!r}.")
    return {key: _tuples(item) for key, item in value.items()}


def _tuples(value: Any) -> Any:
    return tuple(_tuples(v) for v in value) if isinstance(value, list) else value


def _import(source: str) -> Any:
    try:
        if source.endswith(".py") or "/" in source:
            path = Path(source)
            if not path.is_file():
                raise FattrError(f"--model: no such file {source!r}.")
            name = f"fattr_model_{abs(hash(str(path.resolve())))}"
            spec = importlib.util.spec_from_file_location(name, path)
            module = importlib.util.module_from_spec(spec)
            sys.modules[name] = module
            spec.loader.exec_module(module)
            return module
        return importlib.import_module(source)
    except FattrError:
        raise
    except Exception as error:  # any import-time failure is the user's model file
        raise FattrError(f"--model: cannot import {source!r}: "
                         f"{type(error).__name__}: {error}") from None


def _load_weights(model: nn.Module, path: Path, spec: str) -> None:
    if not path.is_file():
        raise FattrError(f"--weights: no such file {str(path)!r}.")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:
        raise FattrError(f"--weights: cannot read {str(path)!r} with torch.load("
                         f"weights_only=True): {_first_line(error)}") from None
    if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
        state = state["state_dict"]
    if not isinstance(state, dict):
        raise FattrError(f"--weights: {str(path)!r} holds a {type(state).__name__}, not a "
                         "state dict.")
    try:
        model.load_state_dict(state)
    except RuntimeError as error:
        raise FattrError(f"--weights: {str(path)!r} does not fit {spec}: "
                         f"{_first_line(error)}") from None


def _first_line(error: BaseException) -> str:
    text = " ".join(str(error).split())
    return text if len(text) <= 300 else text[:297] + "..."
