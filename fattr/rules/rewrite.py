"""Module-tree rewriting: a new tree that shares parameters, with rule modules swapped in.

`rewrite(module, rules)` copies every node of the tree shallowly (new dicts of submodules,
parameters, buffers and hooks; the same Parameter and buffer tensors), so the copy can be
edited and called with `functional_call` while the user's module is never touched. Matched
modules are replaced by what the rule builds. A replacement that needs the replaced module's
parameters subclasses `RuleModule`, which takes them over under the SAME names, so a rewritten
model is called with the user's own `params` dict and stays differentiable in it.

Activations called functionally (`F.relu`, `torch.relu`, `Tensor.relu`, ...) inside the
rewritten model get the rule too: the copy's root runs its forward under a `TorchFunctionMode`
that routes each covered function to the rule, and calls named in `refuse` raise. A module of the
copy can run its forward under its own routes (`scoped`), which take precedence inside it: a
normalization whose internal `rsqrt` is a constant for the rule, say.
"""

from __future__ import annotations

import contextlib
import contextvars
import types
from collections.abc import Callable, Iterator, Mapping
from typing import Any, Union

import torch
from torch import nn
from torch.overrides import TorchFunctionMode

from fattr.errors import FattrError, FattrTypeError

ModuleRule = Callable[[nn.Module], nn.Module]
Key = Union[type, tuple, str]
Rules = Union[Mapping[Key, ModuleRule], Callable[[str, nn.Module], Union[nn.Module, None]]]
FunctionRule = Callable[..., Any]


def copy_tree(module: nn.Module) -> nn.Module:
    """A copy of the tree in which every node is new but every tensor is shared.

    Each node gets a new `__dict__` whose dicts and sets (submodules, parameters, buffers,
    hooks) are copies; what `copy.copy` would do, without its pickling protocol (10x faster).
    """
    clone = object.__new__(type(module))
    state = {key: value.copy() if isinstance(value, (dict, set)) else value
             for key, value in module.__dict__.items()}
    object.__setattr__(clone, "__dict__", state)
    for name, child in module._modules.items():
        state["_modules"][name] = None if child is None else copy_tree(child)
    return clone


def _matcher(rules: Rules) -> Callable[[str, nn.Module], nn.Module | None]:
    if callable(rules) and not isinstance(rules, Mapping):
        return rules
    if not isinstance(rules, Mapping):
        raise FattrTypeError("rewrite: rules must be a mapping from module type, tuple of types "
                             "or dotted name to a rule, or a callable (name, module) -> module "
                             f"or None; got {type(rules).__name__}.")
    for key in rules:
        if not isinstance(key, (type, tuple, str)):
            raise FattrTypeError(f"rewrite: rule key {key!r} is not a module type, a tuple of "
                                 "types or a dotted module name.")

    def match(name: str, module: nn.Module) -> nn.Module | None:
        for key, rule in rules.items():
            if (isinstance(key, str) and key == name) or \
                    (not isinstance(key, str) and isinstance(module, key)):
                return rule(module)
        return None

    return match


def rewrite(module: nn.Module, rules: Rules, *,
            functions: Mapping[Callable, FunctionRule] | None = None,
            refuse: Mapping[Callable, str] | None = None,
            mode: Callable[[], TorchFunctionMode] | None = None) -> nn.Module:
    """A new module tree, sharing parameters with `module`, with matched modules replaced.

    Args:
        module: the user's module; it is never modified.
        rules: a mapping from a module type, a tuple of types, or a dotted name (as in
            `named_modules()`) to a factory `rule(module) -> replacement`; the first matching
            key wins. Or a callable `(name, module) -> replacement or None` (a composite).
        functions: torch functions called inside the model's forward (e.g. `F.relu`,
            `torch.relu`, `Tensor.relu`) mapped to replacements with the same signature.
        refuse: torch functions that must not be called under these rules, mapped to the
            reason; calling one raises a `FattrError` that names the call.
        mode: instead of `functions` and `refuse`, a factory of the `TorchFunctionMode` (a
            `RuleMode`) each forward of the copy runs under (a new one per call).

    Returns a module whose `named_parameters()`/`named_buffers()` names equal the original's,
    so `torch.func.functional_call(rewritten, params, x)` works with the user's params.

    >>> from fattr.rules import GUIDED
    >>> guided = fattr.rewrite(model, {nn.ReLU: GUIDED})   # every ReLU with the guided rule
    """
    if not isinstance(module, nn.Module):
        raise FattrTypeError(f"rewrite: expected an nn.Module, got {type(module).__name__}.")
    match = _matcher(rules)
    root = copy_tree(module)
    replaced = match("", root)
    if replaced is not None:
        root = replaced
    else:
        _swap_children(root, "", match)
    if mode is None and (functions or refuse):
        table, refused = dict(functions or {}), dict(refuse or {})
        mode = lambda: RuleMode(table, refused)
    if mode is not None:
        _route_functions(root, mode)
    return root


def _swap_children(parent: nn.Module, prefix: str,
                   match: Callable[[str, nn.Module], nn.Module | None]) -> None:
    for name, child in list(parent._modules.items()):
        if child is None:
            continue
        path = f"{prefix}.{name}" if prefix else name
        replacement = match(path, child)
        if replacement is not None:
            parent._modules[name] = replacement
            if getattr(replacement, "rewrite_children", False):  # it kept the child's children
                _swap_children(replacement, path, match)
        else:
            _swap_children(child, path, match)


_NO_SCOPE: Mapping[Callable, FunctionRule] = types.MappingProxyType({})
_SCOPE: contextvars.ContextVar[Mapping[Callable, FunctionRule]] = \
    contextvars.ContextVar("fattr_rule_scope", default=_NO_SCOPE)


def scope_routes() -> Mapping[Callable, FunctionRule]:
    """The routes of the `scoped` modules whose forward is running (innermost first)."""
    return _SCOPE.get()


def call_name(func: Callable) -> str:
    """How an error names a torch function (`torch.matmul`, `Tensor.softmax`, ...)."""
    name = getattr(func, "__qualname__", getattr(func, "__name__", repr(func)))
    return name.replace("_VariableFunctionsClass.", "torch.").replace("TensorBase.", "Tensor.")


class RuleMode(TorchFunctionMode):
    """Routes covered torch functions to their rule; refused functions raise. Inside a module
    run by `scoped`, that module's routes come first."""

    def __init__(self, functions: Mapping[Callable, FunctionRule], refuse: Mapping[Callable, str]):
        super().__init__()
        self.functions = functions
        self.refuse = refuse

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        rule = _SCOPE.get().get(func) or self.functions.get(func)
        if rule is not None:
            return rule(*args, **kwargs)
        if func in self.refuse:
            raise FattrError(f"{self.refuse[func]}: the model calls {call_name(func)} "
                             "functionally, which this method has no rule for. Replace the call "
                             "with its nn module (e.g. nn.GELU()) or choose another method.")
        return self.default(func, args, kwargs)

    def default(self, func: Callable, args: tuple, kwargs: dict) -> Any:
        """A call no route covers: run as it is (subclasses may check it)."""
        return func(*args, **kwargs)


def _route_functions(root: nn.Module, mode: Callable[[], TorchFunctionMode]) -> None:
    forward = type(root).forward.__get__(root)

    def routed_forward(*args: Any, **kwargs: Any) -> Any:
        with mode():
            return forward(*args, **kwargs)

    root.forward = routed_forward  # an instance attribute of the copy only


@contextlib.contextmanager
def scope(functions: Mapping[Callable, FunctionRule]) -> Iterator[None]:
    """Inside this context, `functions` take precedence over the routes of the running copy."""
    token = _SCOPE.set({**_SCOPE.get(), **functions})
    try:
        yield
    finally:
        _SCOPE.reset(token)


def scoped(module: nn.Module, functions: Mapping[Callable, FunctionRule]) -> nn.Module:
    """`module` (a node of a rewritten copy) with its forward run under `functions`, which take
    precedence over the copy's routes inside it (and inside its submodules). Returns `module`."""
    forward = module.forward

    def scoped_forward(*args: Any, **kwargs: Any) -> Any:
        with scope(functions):
            return forward(*args, **kwargs)

    module.forward = scoped_forward  # an instance attribute of the copy only
    return module


class RuleModule(nn.Module):
    """Base for replacements that need the replaced module's parameters and buffers.

    The replaced module's parameters and buffers become this module's, under the same names,
    and `self.layer` is a parameter-free view of it for its configuration (stride, eps, ...).
    A replacement that keeps the replaced module's submodules (under their names) sets
    `rewrite_children = True`, and `rewrite` then matches those too.
    `self.layer_call(x, **params)` runs the original layer's forward with the given tensors.
    """

    def __init__(self, layer: nn.Module):
        super().__init__()
        self._parameters = dict(layer._parameters)
        self._buffers = dict(layer._buffers)
        self._non_persistent_buffers_set = set(layer._non_persistent_buffers_set)
        self.training = layer.training
        object.__setattr__(self, "layer", layer)  # not a submodule: its tensors are ours

    def layer_tensors(self) -> dict[str, torch.Tensor]:
        """This module's current parameters and buffers (the call's, under functional_call)."""
        named = {k: v for k, v in self._parameters.items() if v is not None}
        named.update({k: v for k, v in self._buffers.items() if v is not None})
        return named

    def layer_call(self, x: torch.Tensor, **tensors: torch.Tensor) -> torch.Tensor:
        """The original layer's forward on x, with its tensors replaced by `tensors`."""
        return torch.func.functional_call(self.layer, {**self.layer_tensors(), **tensors}, (x,))

    def extra_repr(self) -> str:
        return f"layer={self.layer!r}"
