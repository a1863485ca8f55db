"""Inputs: one tensor or a tuple of tensors, each with the batch axis first (captum's input tuples).

Inside fattr every call works on a tuple (one entry per model input); the boundary turns a single
tensor into a 1-tuple and turns per-input results back into what the caller passed. `tmap`
applies a function input by input; `per_input` spreads a per-input argument (a baseline, a
window, a reshape) over the inputs.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor

from fattr.core.checks import check_input
from fattr.errors import FattrError, FattrTypeError

Inputs = tuple[Tensor, ...]


def as_inputs(x: object, method: str, *, gradient: bool = True,
              batched: bool = True) -> tuple[Inputs, bool]:
    """(inputs, single): x as a validated tuple, and whether the caller passed one tensor.

    Every input must be a finite tensor (floating point for gradient methods) and, when
    `batched`, all inputs have the same batch size (a per-example call has no batch axis); a
    tuple must not be empty.
    """
    if isinstance(x, Tensor):
        return (check_input(x, method, gradient=gradient),), True
    if not isinstance(x, tuple):
        hint = " (for several inputs pass a tuple)" if isinstance(x, list) else ""
        raise FattrTypeError(f"{method}: x must be a torch.Tensor or a tuple of tensors (one per "
                             f"model input, batch axis first), got {type(x).__name__}{hint}.")
    if not x:
        raise FattrError(f"{method}: x is an empty tuple; pass at least one input tensor.")
    for i, t in enumerate(x):
        if not isinstance(t, Tensor):
            raise FattrTypeError(f"{method}: x[{i}] must be a torch.Tensor, got "
                                 f"{type(t).__name__}. Extra arguments that are not attributed "
                                 "go in model_args= or model_kwargs=.")
        check_input(t, f"{method}: x[{i}]", gradient=gradient)
    sizes = [t.shape[0] for t in x]
    if batched and len(set(sizes)) > 1:
        raise FattrError(f"{method}: the inputs in x have batch sizes {sizes} (the first axis of "
                         f"shapes {[tuple(t.shape) for t in x]}); every input needs the same "
                         "number of examples.")
    return tuple(x), False


def tmap(fn: Callable[..., Any], *inputs: tuple) -> tuple:
    """fn applied input by input: `tmap(f, a, b) == tuple(f(ai, bi) for ai, bi in zip(a, b))`."""
    return tuple(fn(*values) for values in zip(*inputs))


def per_input(value: Any, count: int, name: str, method: str, *,
              atom: Callable[[Any], bool] = lambda v: not isinstance(v, tuple)) -> tuple:
    """A per-input argument as a tuple of `count` entries: a tuple of that length is taken as
    given, anything else (an `atom`) is used for every input."""
    if atom(value):
        return (value,) * count
    if not isinstance(value, tuple) or len(value) != count:
        got = f"a tuple of {len(value)}" if isinstance(value, tuple) else type(value).__name__
        raise FattrError(f"{method}: {name} must be one value for every input or a tuple with "
                         f"one entry per input ({count}), got {got}.")
    return value


def rows_of(inputs: Inputs, example: Tensor) -> Inputs:
    """The rows `example` of every input."""
    return tuple(t[example] for t in inputs)


def repeat_rows(t: Tensor, times: int) -> Tensor:
    """(B, ...) -> (times * B, ...), copy-major (row r is example r % B)."""
    return t.repeat(times, *([1] * (t.ndim - 1)))


def flatten_inputs(inputs: Inputs) -> Tensor:
    """(B, d) with d the total element count of one example over all inputs, in input order."""
    return torch.cat([t.reshape(t.shape[0], -1) for t in inputs], 1)


def split_flat(flat: Tensor, like: Inputs) -> Inputs:
    """The inverse of `flatten_inputs` for rows of any count: (N, d) -> inputs shaped (N, ...)."""
    sizes = [math.prod(t.shape[1:]) for t in like]
    parts = flat.split(sizes, 1)
    return tuple(p.reshape(flat.shape[0], *t.shape[1:]) for p, t in zip(parts, like))
