"""Model functions: `functional(module)`, `per_example(f)` and the boundary every method shares.

A model function is anything callable as `f(params, x)` on a batch. `functional(module)` makes
one from an `nn.Module` and keeps the module tree on `f.module` for methods that rewrite it or
tap its layers. `per_example(f)` is the same model as a function of one example, for JAX-style
`vmap`. Internally every method sees a `Model`: the batched function, the `output=` selector,
and whether calls arrive one example at a time.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn
from torch.utils import _pytree as pytree

from fattr.core.targets import Target, TargetSpec
from fattr.errors import FattrError, FattrTypeError

Params = Mapping[str, Tensor]
ModelFn = Callable[..., Any]


class FunctionalModel:
    """`module` as a pure function: `f(params, x, *args) == module(x, *args)` with `params`."""

    def __init__(self, module: nn.Module):
        self.module = module

    def __call__(self, params: Params, x: Tensor | tuple[Tensor, ...], *args: Any,
                 **kwargs: Any) -> Any:
        return call_module(self.module, self.module, params, x, args, kwargs)

    def __repr__(self) -> str:
        return f"functional({type(self.module).__name__})"


def call_module(tree: nn.Module, owner: nn.Module, params: Params,
                x: Tensor | tuple[Tensor, ...], args: tuple, kwargs: dict[str, Any]) -> Any:
    """`tree(*x, *args, **kwargs)` with `params` (x a tensor or a tuple of inputs).

    `tree` is the user's module `owner` or a rewritten copy of it; a params key that names none
    of `owner`'s parameters or buffers is refused (a misspelled key would otherwise be ignored
    and the module's own tensor used)."""
    check_param_names(owner, params)
    inputs = tuple(x) if isinstance(x, (tuple, list)) else (x,)
    return torch.func.functional_call(tree, dict(params), (*inputs, *args), kwargs)


def check_param_names(module: nn.Module, params: Params, method: str = "functional") -> None:
    """Every key of `params` must be a parameter or buffer name of `module`."""
    if not isinstance(params, Mapping):
        raise FattrTypeError(
            f"{method}: params must be a dict of tensors (from `f, params = "
            f"fattr.functional(model)`), got {type(params).__name__}. Attribution functions take "
            "(params, x, target).")
    names = {n for n, _ in module.named_parameters(remove_duplicate=False)}
    names.update(n for n, _ in module.named_buffers(remove_duplicate=False))
    unknown = sorted(k for k in params if k not in names)
    if unknown:
        close = {k: difflib.get_close_matches(k, names, n=1, cutoff=0.6) for k in unknown[:3]}
        hints = "; ".join(f"{k!r}" + (f" (did you mean {c[0]!r}?)" if c else "")
                          for k, c in close.items())
        raise FattrError(
            f"{method}: params has {len(unknown)} key(s) that name no parameter or buffer of "
            f"{type(module).__name__}: {hints}. A misspelled key would be ignored and the "
            "module's own tensor used; keys are the names of model.named_parameters() and "
            "model.named_buffers().")


def functional(module: nn.Module) -> tuple[FunctionalModel, dict[str, Tensor]]:
    """Split `module` into a pure function and its parameters and buffers.

    Returns `(f, params)` with `f(params, x, *args) == module(x, *args)`. `params` maps the
    `named_parameters()` and `named_buffers()` names to detached tensors that share storage with
    the module (no copies; later in-place updates of the module show through). Pass tensors that
    require grad, or differentiate with `torch.func.grad`, to differentiate attributions with
    respect to the parameters.

    >>> f, params = fattr.functional(model.eval())
    >>> torch.allclose(f(params, x), model(x))
    True
    """
    if not isinstance(module, nn.Module):
        raise FattrTypeError(
            f"functional: expected a torch.nn.Module, got {type(module).__name__}.")
    params = {name: p.detach() for name, p in module.named_parameters()}
    params.update({name: b.detach() for name, b in module.named_buffers()})
    return FunctionalModel(module), params


def trainable(f: ModelFn, params: Params) -> dict[str, Tensor]:
    """The entries of `params` that `torch.func.grad` can differentiate: the module's
    parameters (not its buffers, such as BatchNorm's integer `num_batches_tracked` or its
    running statistics), or every floating-point entry for a model without a module.

    >>> grads = torch.func.grad(lambda w: loss({**params, **w}))(fattr.trainable(f, params))
    """
    if isinstance(params, nn.Module) or not isinstance(params, Mapping):
        raise FattrTypeError(
            f"trainable: params must be the dict from `f, params = fattr.functional(model)`, "
            f"got {type(params).__name__}; call fattr.trainable(f, params).")
    module = getattr(f, "module", None)
    if isinstance(module, nn.Module):
        names = {name for name, _ in module.named_parameters()}
        return {k: v for k, v in params.items() if k in names}
    return {k: v for k, v in params.items() if v.is_floating_point()}


class PerExample:
    """A batched model function seen as a function of ONE example (no batch axis)."""

    def __init__(self, batched: ModelFn):
        self.batched = batched
        self.module = getattr(batched, "module", None)

    def __call__(self, params: Params, x: Tensor | tuple[Tensor, ...], *args: Any,
                 **kwargs: Any) -> Any:
        """Tensors in x, args and kwargs get a batch axis of one; the output loses it."""
        add = lambda tree: pytree.tree_map_only(Tensor, lambda t: t.unsqueeze(0), tree)
        out = self.batched(params, add(x), *add(args), **add(kwargs))
        return pytree.tree_map_only(Tensor, lambda t: t.squeeze(0), out)

    def __repr__(self) -> str:
        return f"per_example({self.batched!r})"


def per_example(f: ModelFn) -> PerExample:
    """The model `f` as a function of one example: `x` and the output have no batch axis.

    Every method accepts it, so per-example attribution functions compose with `vmap`:

    >>> attr = fattr.integrated_gradients(fattr.per_example(f))
    >>> torch.func.vmap(attr, in_dims=(None, 0, 0))(params, xs, targets)  # == batched call

    The result keeps `.module`, so rewriting and layer methods work on it too.
    """
    if isinstance(f, PerExample):
        return f
    if not callable(f):
        raise FattrTypeError(f"per_example: expected a model function, got {type(f).__name__}.")
    return PerExample(f)


@dataclass(frozen=True)
class Model:
    """What a method knows about its model: the batched function and how calls arrive."""

    fn: ModelFn
    output: Callable[[Any], Tensor] | None
    per_example: bool
    method: str

    @property
    def module(self) -> nn.Module | None:
        return getattr(self.fn, "module", None)

    def require_module(self) -> nn.Module:
        """The module tree, for methods that rewrite it or tap its layers."""
        module = self.module
        if not isinstance(module, nn.Module):
            raise FattrTypeError(
                f"{self.method}: this method needs the module tree, but the model function "
                f"{self.fn!r} has none. Build it with `f, params = fattr.functional(model)`.")
        return module

    def target(self, spec: TargetSpec, x: Tensor) -> Target:
        """`spec` validated for the batch of x (the first input); models with `flat_index`
        (`to_layer`) read ints as flattened neuron indices."""
        return Target(spec, x.shape[0], x.device, self.method,
                      flat_index=bool(getattr(self.fn, "flat_index", False)))

    def __call__(self, params: Params, x: Tensor | tuple[Tensor, ...], *args: Any,
                 **kwargs: Any) -> Tensor:
        """The model's output (after `output=`) on x with extra forward arguments."""
        out = self.fn(params, x, *args, **kwargs)
        return self.output(out) if self.output is not None else out


def as_model(f: ModelFn, output: Callable[[Any], Tensor] | None, method: str) -> Model:
    """Normalize a method's model argument once, in its constructor."""
    if isinstance(f, Model):
        return Model(f.fn, output or f.output, f.per_example, method)
    if isinstance(f, nn.Module):
        raise FattrTypeError(
            f"{method}: got the module {type(f).__name__} itself, but methods take a model "
            "function f(params, x). Split the module first: `f, params = "
            f"fattr.functional(model)`, then `fattr.{method}(f, ...)(params, x, target)`.")
    if not callable(f):
        raise FattrTypeError(f"{method}: the model must be callable as f(params, x); got "
                             f"{type(f).__name__}. Use `f, params = fattr.functional(model)`.")
    if output is not None and not callable(output):
        raise FattrTypeError(f"{method}: output= must be a callable that picks a tensor from the "
                             f"model's output, got {type(output).__name__}.")
    if isinstance(f, PerExample):
        return Model(f.batched, output, True, method)
    return Model(f, output, False, method)
