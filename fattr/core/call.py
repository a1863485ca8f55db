"""The boundary every attribution function shares, and the `Call` its computation sees.

`attribution(model, compute)` turns `compute(params, call, **per_call)` into the public
function `attr(params, x, target=None, *, model_args=(), model_kwargs=None, **per_call)`:

- x is a tensor or a tuple of tensors (batch axis first); `call.inputs` is always a tuple and
  `call.unpack` gives per-input results back in the caller's form;
- `model_args` / `model_kwargs` are extra forward arguments: the model is called as
  `model(*x, *model_args, **model_kwargs)`. A tensor whose first axis is the batch size is
  per-example and follows its example through every fold, chunk and perturbation (`call.run`
  takes the example index of each row); anything else is passed unchanged;
- the input, the eval mode, the target and the per-call keywords are validated once (an unknown
  keyword is a `FattrTypeError` naming it);
- per-example models (`fattr.per_example`) get a batch axis of one on the way in, and lose it
  on the way out; an empty batch gives an empty result.

The result is an `AttributionFn`, which also carries the contract other functions read
(`per_example`, `batched_kwargs`, the accepted keywords) through `contract(attr_fn)`.
"""

from __future__ import annotations

import difflib
import inspect
from collections.abc import Callable, Mapping
from contextlib import nullcontext
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn
from torch.utils import _pytree as pytree

from fattr.core.checks import check_eval_mode
from fattr.core.inputs import Inputs, as_inputs
from fattr.core.model import Model, Params, check_param_names
from fattr.core.targets import Target, TargetSpec
from fattr.core.training import DropoutWatch, any_training
from fattr.errors import FattrError, FattrTypeError

# captum's spellings of fattr's arguments, for a helpful message
_CAPTUM = {"baselines": "baseline", "n_steps": "steps (a constructor argument)",
           "additional_forward_args": "model_args", "internal_batch_size":
           "batch_size (a constructor argument)", "perturbations_per_eval":
           "batch_size (a constructor argument)", "n_samples": "samples (a constructor argument)",
           "sliding_window_shapes": "window (a constructor argument)", "strides":
           "stride (a constructor argument)", "return_convergence_delta":
           "fattr.completeness_gap(...)", "attribute_to_layer_input":
           "attribute_to_input (a constructor argument)", "stdevs": "stdev"}


@dataclass(frozen=True)
class Extras:
    """Extra forward arguments of one call; per-example tensors (first axis == `batch`) are
    indexed by the example of each evaluated row."""

    args: tuple = ()
    kwargs: Mapping[str, Any] = field(default_factory=dict)
    batch: int = 0

    def per_example(self, value: Any) -> bool:
        return isinstance(value, Tensor) and value.ndim > 0 and value.shape[0] == self.batch

    @property
    def any_per_example(self) -> bool:
        leaves = pytree.tree_leaves((self.args, dict(self.kwargs)))
        return any(self.per_example(v) for v in leaves)

    def tensors(self) -> list[Tensor]:
        return [v for v in pytree.tree_leaves((self.args, dict(self.kwargs)))
                if isinstance(v, Tensor)]

    def at(self, rows: Tensor | None) -> tuple[tuple, dict[str, Any]]:
        """(args, kwargs) for rows whose examples are `rows` (None: the batch as it is)."""
        if rows is None:
            return self.args, dict(self.kwargs)
        pick = lambda v: v[rows] if self.per_example(v) else v
        return pytree.tree_map(pick, self.args), pytree.tree_map(pick, dict(self.kwargs))

    def map(self, fn: Callable[[Tensor], Tensor], batch: int) -> Extras:
        """The same extras with `fn` applied to every per-example tensor (tiling them for
        `batch` rows); other values unchanged."""
        change = lambda v: fn(v) if self.per_example(v) else v
        return Extras(pytree.tree_map(change, self.args),
                      pytree.tree_map(change, dict(self.kwargs)), batch)


@dataclass(frozen=True)
class Call:
    """One validated attribution call: the inputs (always a tuple), their `Target`, the extra
    forward arguments, and whether the caller passed a single tensor."""

    inputs: Inputs
    target: Target
    extras: Extras
    single: bool
    method: str
    per_example: bool = False  # the model function takes one example (fattr.per_example)
    watch: bool = False        # some module is in training mode: refuse functional dropout

    @property
    def batch(self) -> int:
        return self.inputs[0].shape[0]

    @property
    def x(self) -> Tensor:
        """The input, for methods defined on one input tensor (a clear error for a tuple)."""
        if not self.single:
            raise FattrError(f"{self.method}: this method takes one input tensor, got a tuple of "
                             f"{len(self.inputs)}. Attribute one input at a time (the others "
                             "as model_args=).")
        return self.inputs[0]

    @property
    def first(self) -> Tensor:
        """The first input (its spatial size is the size CAMs upsample to)."""
        return self.inputs[0]

    def pack(self, inputs: Inputs) -> Tensor | Inputs:
        """Inputs as the model function takes them: a tensor for a single input."""
        return inputs[0] if self.single else tuple(inputs)

    def unpack(self, values: tuple) -> Any:
        """Per-input results in the caller's form: a tensor for a single input, else a tuple."""
        return values[0] if self.single else tuple(values)

    def run(self, model: Model, params: Params, inputs: Inputs, rows: Tensor | None = None,
            ) -> Any:
        """The model on rows of inputs whose examples are `rows` (None: the call's batch)."""
        if rows is None and inputs[0].shape[0] != self.batch and self.extras.any_per_example:
            raise FattrError(f"{self.method}: internal error: {inputs[0].shape[0]} rows evaluated "
                             f"without their example index, so per-example model arguments "
                             "cannot follow them. Please report this.")
        args, kwargs = self.extras.at(rows)
        try:
            with DropoutWatch(self.method) if self.watch else nullcontext():
                return model(params, self.pack(inputs), *args, **kwargs)
        except (RuntimeError, IndexError, TypeError) as err:
            if not self.per_example or isinstance(err, FattrError):
                raise
            shapes = [tuple(t.shape[1:]) for t in self.inputs]
            shown = shapes[0] if self.single else shapes
            raise FattrError(
                f"{self.method}: the model failed on x of shape {shown} ({type(err).__name__}: "
                f"{err}). The model function is per-example "
                "(fattr.per_example): x must be ONE example without its batch axis; for a "
                "batch, use the batched model function or vmap over the examples.") from err

    def score(self, model: Model, params: Params, inputs: Inputs,
              rows: Tensor | None = None) -> Tensor:
        """The target score of every row, (N,). The model must return one value (or one row)
        per input row: a value for the whole batch (a loss) would mix the examples' gradients."""
        out = self.run(model, params, inputs, rows)
        n = inputs[0].shape[0]
        if isinstance(out, Tensor) and (out.ndim == 0 or out.shape[0] != n):
            raise FattrError(
                f"{self.method}: the model returned shape {tuple(out.shape)} for {n} examples, "
                "not one value (or one row) per example; it seems to reduce over the batch "
                "(a loss). Attributions need per-example values: return them unreduced (e.g. "
                "reduction='none'); the perturbation methods also attribute one value for the "
                "whole batch, with target=None, as captum does.")
        return self.target.select(out, rows)

    def check_target(self, model: Model, params: Params) -> None:
        """For methods that do not use the target: a given target must still fit the model's
        output (one forward pass without gradients); None is always accepted."""
        if self.target.spec is not None:
            with torch.no_grad():
                self.score(model, params, self.inputs)

    def tensors(self) -> list[Tensor]:
        """Every tensor the model sees besides params: the inputs and the extra arguments."""
        return [*self.inputs, *self.extras.tensors()]


@dataclass(frozen=True)
class Contract:
    """What an attribution function promises its callers (wrappers, metrics)."""

    per_example: bool = False               # takes one example (no batch axis)
    batched_kwargs: tuple[str, ...] = ()    # per-call arguments that may hold one row per example
    keywords: tuple[str, ...] | None = None  # the per-call keywords it takes (None: unknown)


class AttributionFn:
    """A public attribution function: `attr(params, x, target=None, **per_call)`."""

    def __init__(self, fn: Callable[..., Any], name: str, contract: Contract,
                 doc: str | None = None, compilable: bool = True):
        # a method torch.compile cannot trace (custom autograd Functions under a function
        # mode, host work) runs eagerly inside a compiled caller: one graph break at the call
        self._fn = fn if compilable else torch.compiler.disable(fn, recursive=True)
        self.__name__ = self.__qualname__ = name
        self.__doc__ = doc
        self.contract = contract

    @property
    def per_example(self) -> bool:
        return self.contract.per_example

    @property
    def batched_kwargs(self) -> tuple[str, ...]:
        return self.contract.batched_kwargs

    def __call__(self, params: Params, x: Any, target: TargetSpec = None, **per_call: Any):
        return self._fn(params, x, target, **per_call)

    def __repr__(self) -> str:
        return f"<fattr attribution function {self.__name__}>"


def contract(attr_fn: Callable[..., Any]) -> Contract:
    """The contract of any attribution function; a plain user function is batched and takes
    whatever keywords it declares."""
    if isinstance(attr_fn, AttributionFn):
        return attr_fn.contract
    return Contract(bool(getattr(attr_fn, "per_example", False)),
                    tuple(getattr(attr_fn, "batched_kwargs", ())))


def keywords_of(compute: Callable[..., Any]) -> tuple[str, ...] | None:
    """The keyword arguments `compute(params, call, ...)` declares (None if it takes **any)."""
    parameters = list(inspect.signature(compute).parameters.values())[2:]
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters):
        return None
    return tuple(p.name for p in parameters)


def check_keywords(given: Mapping[str, Any], accepted: tuple[str, ...] | None,
                   method: str) -> None:
    """Unknown per-call keywords are refused with a `FattrTypeError` that names them."""
    if accepted is None:
        return
    unknown = [k for k in given if k not in accepted]
    if not unknown:
        return
    name = unknown[0]
    takes = ", ".join(f"{k}=" for k in (*accepted, "model_args", "model_kwargs"))
    hint = ""
    if name in _CAPTUM:
        hint = f" (captum's {name}= is fattr's {_CAPTUM[name]})"
    else:
        close = difflib.get_close_matches(name, [*accepted, "model_args", "model_kwargs"], n=1)
        hint = f" (did you mean {close[0]}=?)" if close else ""
    raise FattrTypeError(f"{method}: unexpected argument {name}={hint}; this method takes "
                         f"{takes} after (params, x, target).")


def _check_extras(model_args: Any, model_kwargs: Any, method: str) -> tuple[tuple, dict]:
    if isinstance(model_args, list):
        model_args = tuple(model_args)
    if not isinstance(model_args, tuple):
        raise FattrTypeError(f"{method}: model_args must be a tuple of extra positional forward "
                             f"arguments, got {type(model_args).__name__}; for one argument "
                             "pass model_args=(value,).")
    if model_kwargs is None:
        model_kwargs = {}
    if not isinstance(model_kwargs, Mapping):
        raise FattrTypeError(f"{method}: model_kwargs must be a dict of extra keyword forward "
                             f"arguments, got {type(model_kwargs).__name__}.")
    return model_args, dict(model_kwargs)


def empty_like_inputs(call: Call) -> Any:
    """The attribution of an empty batch for per-input methods: zeros shaped like x."""
    return call.unpack(tuple(torch.zeros_like(t) for t in call.inputs))


def check_params(params: object, method: str) -> None:
    """`params` must be the dict of tensors from `fattr.functional` (not the module)."""
    if isinstance(params, Mapping):
        return
    if isinstance(params, nn.Module):
        raise FattrTypeError(
            f"{method}: params is the module {type(params).__name__}, but attribution functions "
            "take the dict of its tensors: `f, params = fattr.functional(model)`, then "
            "attr(params, x, target).")
    raise FattrTypeError(f"{method}: params must be a dict of tensors (from `f, params = "
                         f"fattr.functional(model)`), got {type(params).__name__}. Attribution "
                         "functions take (params, x, target).")


def prepare(model: Model, x: Any, target: TargetSpec, model_args: Any = (),
            model_kwargs: Mapping[str, Any] | None = None, *, gradient: bool = True,
            params: object = None) -> Call:
    """Validate one call at the boundary (params, inputs, extra arguments, eval mode, target)
    and build its `Call`; a per-example model's inputs, target and tensor arguments get a batch
    axis."""
    method = model.method
    if params is not None:
        check_params(params, method)
        if model.module is not None:
            check_param_names(model.module, params, method)
    inputs, single = as_inputs(x, method, gradient=gradient, batched=not model.per_example)
    model_args, model_kwargs = _check_extras(model_args, model_kwargs, method)
    check_eval_mode(model.module, method)
    watch = any_training(model.module)
    extras = Extras(model_args, model_kwargs, inputs[0].shape[0])
    if model.per_example:
        add = lambda t: t.unsqueeze(0)
        inputs = tuple(add(t) for t in inputs)
        target = add(target) if isinstance(target, Tensor) else target
        extras = Extras(*pytree.tree_map_only(Tensor, add, (model_args, model_kwargs)), 1)
    return Call(inputs, model.target(target, inputs[0]), extras, single, method,
                model.per_example, watch)


def finish(model: Model, result: Any) -> Any:
    """The result as the caller expects it: without the batch axis for a per-example model."""
    if model.per_example:
        return pytree.tree_map_only(Tensor, lambda t: t.squeeze(0), result)
    return result


def attribution(model: Model, compute: Callable[..., Any], *, gradient: bool = True,
                empty: Callable[[Call], Any] = empty_like_inputs,
                batched_kwargs: tuple[str, ...] = (), keywords: tuple[str, ...] | None = None,
                doc: str | None = None, compilable: bool = True) -> AttributionFn:
    """The public attribution function around `compute(params, call, **per_call)`.

    `gradient`: the inputs must be floating point. `empty(call)` is the result of an empty
    batch. `batched_kwargs` names the per-call arguments that may hold one row per example (such
    as `baseline`), so wrappers like `smoothgrad` repeat them with x. `keywords` are the
    per-call keywords accepted (default: those `compute` declares). `compilable=False`: under
    torch.compile the call runs eagerly (a graph break), for methods Dynamo cannot trace.
    """
    method = model.method
    accepted = keywords if keywords is not None else keywords_of(compute)

    def attribute(params: Params, x: Any, target: TargetSpec = None, *, model_args: Any = (),
                  model_kwargs: Mapping[str, Any] | None = None, **per_call: Any) -> Any:
        check_keywords(per_call, accepted, method)
        call = prepare(model, x, target, model_args, model_kwargs, gradient=gradient,
                       params=params)
        result = empty(call) if call.batch == 0 else compute(params, call, **per_call)
        return finish(model, result)

    return AttributionFn(attribute, method,
                         Contract(model.per_example, batched_kwargs, accepted), doc, compilable)
