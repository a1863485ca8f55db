"""What every metric shares: its model and attribution arguments checked, attributions shaped
like the call's inputs, ranks, and chunked target scores.

A metric sees its model and input through the boundary every attribution method uses
(`fattr.core.call.prepare`): `x` may be one tensor or a tuple of tensors, and `model_args` /
`model_kwargs` are extra forward arguments whose per-example tensors follow their example
through every chunk (`call.score(..., rows)`). For a per-example model (`fattr.per_example(f)`)
the metric takes ONE example (no batch axis) and returns one value instead of one per example
(`fattr.core.call.finish`); inside, everything runs batched.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import torch
from torch import Tensor, nn

from fattr.core.call import AttributionFn, Call, contract
from fattr.core.checks import concrete
from fattr.core.chunking import chunked
from fattr.core.inputs import Inputs, flatten_inputs
from fattr.core.model import Model, ModelFn, Params, as_model
from fattr.errors import FattrError, FattrTypeError

# inputs_of(step, example) -> the model inputs of rows (step, example)
RowInputs = Callable[[Tensor, Tensor], Inputs]


def is_model_function(value: object) -> bool:
    """A module, or a model function that carries one (`fattr.functional`, `per_example`,
    `to_layer`); attribution functions carry none."""
    return isinstance(value, nn.Module) or isinstance(getattr(value, "module", None), nn.Module)


def model_of(f: ModelFn, output: Callable[[Any], Tensor] | None, method: str) -> Model:
    """The metric's model; an attribution function where the model function belongs is
    refused with a sentence."""
    if isinstance(f, AttributionFn):
        raise FattrTypeError(f"{method}: f is the attribution function {f.__name__}, but this "
                             "metric takes the model function itself (f, params = "
                             "fattr.functional(model)) and the attribution as a tensor, e.g. "
                             f"fattr.metrics.{method}(f, params, x, attr_fn(params, x, target), "
                             "target).")
    return as_model(f, output, method)


def check_attr_fn(attr_fn: object, method: str) -> Callable[..., Any]:
    """An attribution function `attr(params, x, target, **per_call)`, not a model."""
    if is_model_function(attr_fn):
        raise FattrTypeError(f"{method}: attr_fn is the model {attr_fn!r}, but an attribution "
                             "function is expected: build one from the model function, e.g. "
                             "attr_fn=fattr.saliency(f) or fattr.integrated_gradients(f).")
    if not callable(attr_fn):
        raise FattrTypeError(f"{method}: attr_fn must be an attribution function such as "
                             f"fattr.saliency(f), got {type(attr_fn).__name__}.")
    return attr_fn


def check_method(value: object, method: str, name: str = "method") -> Callable[..., Any]:
    """A method constructor (model function -> attribution function), such as fattr.saliency."""
    if isinstance(value, AttributionFn):
        raise FattrTypeError(f"{method}: {name} got the attribution function {value.__name__}, "
                             "but it must map a model function to an attribution function: "
                             "pass the constructor itself (fattr.saliency) or a lambda "
                             "(lambda f: fattr.integrated_gradients(f, steps=16)).")
    if is_model_function(value) or not callable(value):
        got = repr(value) if is_model_function(value) else type(value).__name__
        raise FattrTypeError(f"{method}: {name} must map a model function to an attribution "
                             f"function (e.g. fattr.saliency), got {got}.")
    return value


def check_finite(t: Tensor, method: str, name: str) -> Tensor:
    values = concrete(t)
    if values.numel() and not bool(torch.isfinite(values).all()):
        raise FattrError(f"{method}: {name} contains NaN or Inf; compute it again or clean it "
                         "(torch.nan_to_num) before evaluating it.")
    return t


def check_like(t: object, x: Tensor, method: str, name: str = "attribution", *,
               broadcast: bool = False, input_name: str = "x") -> Tensor:
    """`t` must be a finite tensor shaped like x (B, ...); with `broadcast`, axes after the
    batch axis may be 1 (a (B, 1, H, W) map for (B, C, H, W) images)."""
    if not isinstance(t, Tensor):
        raise FattrTypeError(f"{method}: {name} must be a torch.Tensor shaped like {input_name} "
                             f"{tuple(x.shape)}, got {type(t).__name__}.")
    fits = t.ndim == x.ndim and t.shape[:1] == x.shape[:1] and all(
        a == s or (broadcast and a == 1) for a, s in zip(t.shape[1:], x.shape[1:]))
    if not fits:
        also = (" (or with size-1 axes that broadcast over it, such as a (B, 1, H, W) map "
                "for (B, C, H, W) images)") if broadcast else ""
        raise FattrError(f"{method}: {name} has shape {tuple(t.shape)} but {input_name} has "
                         f"shape {tuple(x.shape)}; pass one {name} per example shaped like "
                         f"{input_name}{also}.")
    if t.is_floating_point():
        return check_finite(t, method, name)
    return t if t.dtype == torch.bool else t.to(x.dtype)


def one_per_input(value: object, count: int, single: bool, method: str, name: str) -> tuple:
    """A per-input tensor argument (attributions, perturbations) as a tuple with one entry per
    input: the value itself for a single input, a tuple (or list) of `count` for a tuple x."""
    if single:
        return (value,)
    if isinstance(value, (tuple, list)) and len(value) == count:
        return tuple(value)
    got = (f"a {type(value).__name__} of {len(value)}" if isinstance(value, (tuple, list))
           else f"one tensor of shape {tuple(value.shape)}" if isinstance(value, Tensor)
           else type(value).__name__)
    raise FattrError(f"{method}: x is a tuple of {count} inputs, so {name} must be a tuple with "
                     f"one tensor per input, got {got}.")


def attributions_for(attribution: object, call: Call, model: Model, method: str, *,
                     broadcast: bool = False, name: str = "attribution") -> Inputs:
    """The attribution as one checked (B, ...) tensor per input of the call."""
    given = one_per_input(attribution, len(call.inputs), call.single, method, name)
    if model.per_example:
        given = tuple(a.unsqueeze(0) if isinstance(a, Tensor) else a for a in given)
    where = lambda i, n: n if call.single else f"{n}[{i}]"
    return tuple(check_like(a, x, method, where(i, name), broadcast=broadcast,
                            input_name=where(i, "x"))
                 for i, (a, x) in enumerate(zip(given, call.inputs)))


def attribution_of(attr_fn: Callable[..., Any], params: Params, call: Call, inputs: Inputs,
                   per_call: Mapping[str, Any], method: str) -> Inputs:
    """attr_fn on batched inputs of the call, passed as the caller passes x (one example for
    a per-example attr_fn, whose result gets the batch axis back): one (B, ...) per input."""
    spec, count = call.target.spec, len(call.inputs)
    if not contract(attr_fn).per_example:
        result = attr_fn(params, call.pack(inputs), spec, **per_call)
        return as_result(result, count, call.single, method)
    spec = spec.squeeze(0) if isinstance(spec, Tensor) else spec
    one = call.pack(tuple(t.squeeze(0) for t in inputs))
    result = as_result(attr_fn(params, one, spec, **per_call), count, call.single, method)
    return tuple(a.unsqueeze(0) for a in result)


def as_result(result: object, count: int, single: bool, method: str) -> Inputs:
    """An attribution function's result as a tuple: a tensor for one input, a tuple for many."""
    values = (result,) if single else result
    if not (isinstance(values, tuple) and len(values) == count
            and all(isinstance(v, Tensor) for v in values)):
        want = "a tensor" if single else f"a tuple of {count} tensors"
        raise FattrError(f"{method}: attr_fn must return {want} (one attribution per input), "
                         f"got {type(result).__name__}.")
    return values


def forwarded(model_args: Any, model_kwargs: Mapping[str, Any] | None) -> dict[str, Any]:
    """The extra forward arguments as keywords for an attribution function (only those given,
    so plain functions without them still work)."""
    given = {} if isinstance(model_args, tuple) and not model_args else {"model_args": model_args}
    return {**given, "model_kwargs": model_kwargs} if model_kwargs is not None else given


def check_maps(attribution: object, method: str) -> Tensor:
    """Attribution maps (B, ...) with at least one axis after the batch axis (one tensor: the
    localisation metrics compare a map with a mask of the same input)."""
    if isinstance(attribution, tuple):
        raise FattrError(f"{method}: attribution is a tuple of {len(attribution)} maps (one per "
                         "input), but this metric compares ONE map with its mask; pass the map "
                         "of the input the mask belongs to, e.g. attribution[0].")
    if not isinstance(attribution, Tensor):
        raise FattrTypeError(f"{method}: attribution must be a floating-point tensor (B, ...), "
                             f"got {type(attribution).__name__}.")
    if attribution.ndim < 2 or not attribution.is_floating_point():
        got = f"shape {tuple(attribution.shape)} and dtype {attribution.dtype}"
        raise FattrError(f"{method}: attribution must be a floating-point tensor (B, ...) with a "
                         f"batch axis and at least one feature axis, got {got}. For one map "
                         "pass a[None].")
    return check_finite(attribution, method, "attribution")


def flat_maps(attribution: object, method: str) -> Tensor:
    """Maps (B, ...) or a tuple of them (one per input, same B) as one row per example (B, D)."""
    if not isinstance(attribution, tuple):
        return check_maps(attribution, method).flatten(1)
    if not attribution:
        raise FattrError(f"{method}: attribution is an empty tuple; pass one map per input.")
    maps = tuple(check_maps(a, method) for a in attribution)
    sizes = [a.shape[0] for a in maps]
    if len(set(sizes)) > 1:
        raise FattrError(f"{method}: the maps of the tuple have batch sizes {sizes}; every input's "
                         "map needs one row per example.")
    return flatten_inputs(maps)


def ranks(values: Tensor, descending: bool = True) -> Tensor:
    """The rank of every element within its example (0 = largest when `descending`); ties keep
    their flattened order. Shape and layout as `values` (B, ...)."""
    flat = values.detach().flatten(1)
    order = flat.argsort(dim=1, descending=descending, stable=True)
    position = torch.arange(flat.shape[1], device=flat.device).expand_as(order)
    return torch.empty_like(order).scatter(1, order, position).reshape(values.shape)


def removal_counts(features: int, steps: int, device: torch.device) -> Tensor:
    """How many features are removed at each of the steps + 1 points: floor(i * n / steps)."""
    return torch.arange(steps + 1, device=device) * features // steps


def row_scores(model: Model, params: Params, call: Call, count: int, inputs_of: RowInputs,
               batch_size: int | None) -> Tensor:
    """The target score of `count` rows per example, (count, B): row (s, b) is the model on
    `inputs_of(s, b)` (built inside the chunk that evaluates it) with example b's extra
    forward arguments; rows are step-major and go `batch_size` at a time."""
    batch = call.batch
    index = torch.arange(count * batch, device=call.first.device)

    def score(rows: Tensor) -> Tensor:
        step, example = rows // batch, rows % batch
        return call.score(model, params, inputs_of(step, example), example)

    return chunked(score, index, batch_size=batch_size).reshape(count, batch)


def trapezoid(curve: Tensor) -> Tensor:
    """Area under a curve sampled at S evenly spaced points of [0, 1]: (S, B) -> (B,)."""
    return torch.trapezoid(curve, dx=1.0 / (curve.shape[0] - 1), dim=0)


def safe_divide(num: Tensor, den: Tensor) -> Tensor:
    """num / den with 0 where den == 0 (also safe for gradients)."""
    nonzero = den != 0
    return torch.where(nonzero, num / torch.where(nonzero, den, torch.ones_like(den)),
                       torch.zeros_like(num))


def check_per_example(attr_fn: Callable[..., Any], model: Model, method: str) -> None:
    """The attribution function must take x in the same form (batched or one example) as f."""
    if contract(attr_fn).per_example != model.per_example:
        model_form = "per-example" if model.per_example else "batched"
        raise FattrError(f"{method}: the model is {model_form} but attr_fn is not; build both "
                         "from the same model function (wrap both, or neither, in "
                         "fattr.per_example).")


def perturbations_for(perturbations: object, inputs: Inputs, single: bool, method: str, *,
                      add_batch: bool = False) -> Inputs:
    """Given perturbations, one (S, *x.shape) per input with the same S >= 1, as finite floats
    on each input's device; `add_batch` (a per-example model) gives (S, ...) a batch axis."""
    given = one_per_input(perturbations, len(inputs), single, method, "perturbations")
    checked = []
    for i, (p, x) in enumerate(zip(given, inputs)):
        name = "perturbations" if single else f"perturbations[{i}]"
        if isinstance(p, Tensor) and add_batch:
            p = p.unsqueeze(1)
        if not isinstance(p, Tensor) or p.ndim != x.ndim + 1 or p.shape[1:] != x.shape or \
                p.shape[0] == 0:
            got = tuple(p.shape) if isinstance(p, Tensor) else type(p).__name__
            shape = tuple(x.shape[1:] if add_batch else x.shape)
            raise FattrError(f"{method}: {name} must have shape (S, *{shape}), S >= 1 "
                             f"perturbations of x, got {got}.")
        checked.append(check_finite(p.to(dtype=x.dtype, device=x.device), method, name))
    counts = sorted({p.shape[0] for p in checked})
    if len(counts) > 1:
        raise FattrError(f"{method}: the perturbations of the inputs have {counts} samples; every "
                         "input needs the same number S (sample s of every input together is "
                         "one perturbation).")
    return tuple(checked)
