"""Layer taps: read, perturb or replace a named layer's output inside one functional call.

A tap is a set of forward hooks on the user's module, registered for ONE call of the model
function and removed in `finally`, also when the call raises. Forward hooks run inside
`torch.func.functional_call` under `grad` and `vmap`; backward hooks do not (under
`torch.func.grad`), so a layer's gradient comes from a zero perturbation added to its output
and differentiated with `torch.func.grad` (the Flax `perturb` idea). Everything is plain torch
ops, so tapped quantities stay differentiable in `params` and `x`.

A tapped layer must run once per forward pass: a module that is called twice (a shared ReLU)
has no single output, and the tap says so instead of picking one.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any, NamedTuple, Union

import torch
from torch import Tensor, nn

from fattr.core.gradients import gradient_with_aux, plain_autograd_suffices
from fattr.core.model import FunctionalModel, Model, Params
from fattr.core.targets import Target
from fattr.errors import FattrError, FattrTypeError
from fattr.rules.apply import under_rules

LayerSpec = Union[str, nn.Module]
Edit = Callable[[int, Tensor], Tensor]


def layer_name(module: nn.Module, layer: LayerSpec, method: str) -> str:
    """The dotted `named_modules()` name of `layer` (a name or a submodule of `module`)."""
    names = dict(module.named_modules(remove_duplicate=False))
    if isinstance(layer, nn.Module):
        for name, sub in names.items():
            if sub is layer:
                return name
        raise FattrError(f"{method}: the layer {type(layer).__name__} passed as a module is not "
                         f"part of the model {type(module).__name__}. Pass a submodule of the "
                         "model or its dotted name from model.named_modules().")
    if not isinstance(layer, str):
        raise FattrTypeError(f"{method}: layer must be a dotted name from "
                             f"model.named_modules() or a submodule, got {type(layer).__name__}.")
    if layer not in names:
        close = difflib.get_close_matches(layer, [n for n in names if n], n=3, cutoff=0.5)
        hint = (f" Did you mean {', '.join(repr(c) for c in close)}?" if close else
                f" Names look like {', '.join(repr(n) for n in list(names)[1:4])}.")
        raise FattrError(f"{method}: the model {type(module).__name__} has no layer named "
                         f"{layer!r}.{hint} Layer names are the dotted names of "
                         "model.named_modules().")
    return layer


def _tensor_of(output: Any, name: str, method: str) -> Tensor:
    """The tapped tensor of a layer output: the output, or the first item of a tuple/list."""
    if isinstance(output, Tensor):
        return output
    if isinstance(output, (tuple, list)) and output and isinstance(output[0], Tensor):
        return output[0]
    raise FattrError(f"{method}: layer {name!r} returned {type(output).__name__}; a tap needs a "
                     "tensor (or a tuple whose first item is the tensor to tap). Tap a submodule "
                     "that returns a tensor.")


def _with_tensor(output: Any, new: Tensor) -> Any:
    if isinstance(output, Tensor):
        return new
    return type(output)((new, *output[1:])) if isinstance(output, tuple) else [new, *output[1:]]


class _Stop(BaseException):
    """Ends a forward pass once every tapped layer has run (never escapes a tap)."""


def layer_hooks(names: Sequence[str], on_output: Edit, method: str, stop_after: bool = False,
                plain: dict[int, bool] | None = None) -> list[Callable[..., Any]]:
    """One forward hook per named layer, `hook(module, args, output) -> new output`.

    `on_output(i, tensor)` sees the tensor output of layer `names[i]` and returns what the model
    continues with. With `stop_after`, the forward pass ends (raising `_Stop`) once every layer
    has run. A layer that runs twice raises. `plain[i]` records whether layer i returned a plain
    tensor (not a tuple).
    """
    calls = [0] * len(names)

    def hook_for(i: int) -> Callable[..., Any]:
        def hook(_: nn.Module, __: Any, output: Any) -> Any:
            calls[i] += 1
            if calls[i] > 1:
                raise FattrError(
                    f"{method}: layer {names[i]!r} ran {calls[i]} times in one forward pass "
                    "(the module is reused), so it has no single output to tap. Tap a module "
                    "that runs once, such as the block that contains it.")
            if plain is not None:
                plain[i] = isinstance(output, Tensor)
            new = on_output(i, _tensor_of(output, names[i], method))
            if stop_after and all(calls):
                raise _Stop
            return _with_tensor(output, new)
        return hook

    return [hook_for(i) for i in range(len(names))]


@contextmanager
def hooked(module: nn.Module, names: Sequence[str], on_output: Edit, method: str,
           stop_after: bool = False, plain: dict[int, bool] | None = None) -> Iterator[None]:
    """The `layer_hooks` registered on the named submodules for the duration of the block; the
    forward pass ends silently at a `stop_after` stop. The hooks are removed in `finally`."""
    modules = dict(module.named_modules(remove_duplicate=False))
    handles = []
    try:
        for name, hook in zip(names, layer_hooks(names, on_output, method, stop_after, plain)):
            handles.append(modules[name].register_forward_hook(hook))
        yield
    except _Stop:
        pass
    finally:
        for handle in handles:
            handle.remove()


def _forward_then(module: nn.Module, hook: Callable[..., Any]) -> None:
    """Makes `module` (a node of a rewritten copy) call `hook` on its output, as a forward hook
    would (but before the module's own forward hooks)."""
    forward = module.forward

    def hooked_forward(*args: Any, **kwargs: Any) -> Any:
        output = forward(*args, **kwargs)
        new = hook(module, args, output)
        return output if new is None else new

    module.forward = hooked_forward  # an instance attribute of the copy only


def compiled_hooks(model: Model, names: Sequence[str], hooks: Sequence[Callable[..., Any]],
                   ) -> Model:
    """`model` whose named layers call their hooks, in a rewritten copy of the module tree:
    torch.compile cannot trace hook registration (`RemovableHandle` ids), but traces this."""
    hook_of = dict(zip(names, hooks))

    def install(name: str, module: nn.Module) -> None:
        if name in hook_of:
            _forward_then(module, hook_of[name])
        return None  # the copy stays in the tree; its children are visited too

    return under_rules(model, install)


class _Replay(nn.Module):
    """Stands in for a tapped layer in `Tap.replayed`: returns `slots[index]`."""

    def __init__(self, slots: list[Tensor], index: int):
        super().__init__()
        self.slots, self.index = slots, index

    def forward(self, *args: Any, **kwargs: Any) -> Tensor:
        return self.slots[self.index]


class Tapped(NamedTuple):
    """What a tapped gradient pass returns (lists follow the tap's layer order)."""

    gradients: list[Tensor]        # d (summed target score) / d layer output
    activations: list[Tensor]      # the layer outputs (the given values when replaced)
    scores: Tensor                 # the target score of each row, (N,)
    input_gradient: Tensor | None  # d score / d x when asked for


class Tap:
    """Taps on named layers of a model, resolved once (in a method's constructor).

    `read` gives the layer outputs (running the model only up to the last tapped layer), `run`
    gives the model output with the layer outputs replaced by `edit`, and `gradients` gives the
    gradient of the target score with respect to the layer outputs (or to values put in their
    place). The layer output shapes for a given input shape are found once by a probing
    no-grad forward pass, which also checks that each layer runs exactly once.
    """

    def __init__(self, model: Model, layers: LayerSpec | Sequence[LayerSpec], method: str):
        self.model = model
        self.module = model.require_module()
        many = isinstance(layers, (list, tuple))
        self.names = tuple(layer_name(self.module, layer, method)
                           for layer in (layers if many else [layers]))
        if not self.names:
            raise FattrError(f"{method}: no layers to tap; pass at least one layer name.")
        self.method = method
        self._shapes: dict[tuple, list[tuple[torch.Size, torch.dtype, torch.device]]] = {}
        self._plain: dict[int, bool] = {}  # whether each layer returned a plain tensor
        self._slots: list[Tensor] = []     # what the layers return in `replayed`
        self._replaying: Model | None = None

    def _forward(self, params: Params, x: Tensor, on_output: Edit, stop_after: bool = False,
                 ) -> Any:
        """`self.model(params, x)` with `on_output` applied to each tapped layer's output
        (None when `stop_after` ended the pass early): forward hooks on the user's module, or,
        while torch.compile traces a model from `fattr.functional`, the same hooks in a
        rewritten copy (`compiled_hooks`; no early stop there)."""
        if torch.compiler.is_compiling() and isinstance(self.model.fn, FunctionalModel):
            hooks = layer_hooks(self.names, on_output, self.method, plain=self._plain)
            return compiled_hooks(self.model, self.names, hooks)(params, x)
        with hooked(self.module, self.names, on_output, self.method, stop_after, self._plain):
            return self.model(params, x)
        return None

    def shapes(self, params: Params, x: Tensor,
               ) -> list[tuple[torch.Size, torch.dtype, torch.device]]:
        """(shape, dtype, device) of each layer output for inputs shaped like x (probed once)."""
        key = (tuple(x.shape), x.dtype, x.device)
        if key not in self._shapes:
            seen: dict[int, tuple[torch.Size, torch.dtype, torch.device]] = {}

            def record(i: int, t: Tensor) -> Tensor:
                seen[i] = (t.shape, t.dtype, t.device)
                return t

            with torch.no_grad():
                self._forward(params, x, record)
            self._check_ran(seen)
            self._shapes[key] = [seen[i] for i in range(len(self.names))]
        return self._shapes[key]

    def _check_ran(self, seen: dict[int, Any]) -> None:
        missing = [n for i, n in enumerate(self.names) if i not in seen]
        if missing:
            raise FattrError(f"{self.method}: layer {missing[0]!r} did not run in the forward "
                             "pass, so it has no output to tap. Pick a layer that the model's "
                             "forward() calls.")

    def read(self, params: Params, x: Tensor) -> list[Tensor]:
        """The output of each tapped layer; the model runs only up to the last of them."""
        self.shapes(params, x)  # checks, once per input shape, that every layer runs once
        seen: dict[int, Tensor] = {}

        def record(i: int, t: Tensor) -> Tensor:
            seen[i] = t  # the model goes on with a copy while more layers are to come
            return t if len(seen) == len(self.names) else t.clone()

        self._forward(params, x, record, stop_after=True)
        self._check_ran(seen)
        return [seen[i] for i in range(len(self.names))]

    def run(self, params: Params, x: Tensor, edit: Edit | None = None,
            ) -> tuple[Tensor, list[Tensor]]:
        """(model output, layer outputs) with each layer output t_i replaced by edit(i, t_i).

        The recorded outputs are the layers' own, before the edit; the model continues with a
        copy when there is no edit, so in-place operations later in the model cannot change
        what was recorded.
        """
        seen: dict[int, Tensor] = {}

        def record(i: int, t: Tensor) -> Tensor:
            seen[i] = t
            new = edit(i, t) if edit is not None else t
            return t.clone() if new is t else new

        out = self._forward(params, x, record)
        self._check_ran(seen)
        return out, [seen[i] for i in range(len(self.names))]

    def replayed(self, params: Params, x: Tensor, values: Sequence[Tensor]) -> Any:
        """The model output with each tapped layer's output replaced by `values[i]`, without
        computing those layers: a rewritten copy of the module tree (the user's module is not
        touched) in which each layer returns its value, pytorch-grad-cam's AblationCAM trick.
        A layer seen returning a tuple (by an earlier `run`, `read` or `shapes`), or a model
        not from `fattr.functional`, is computed and its output replaced instead."""
        replayable = isinstance(self.model.fn, FunctionalModel) and \
            all(self._plain.get(i, False) for i in range(len(self.names)))
        if not replayable:
            out, _ = self.run(params, x, lambda i, _: values[i])
            return out
        if self._replaying is None:
            self._replaying = under_rules(self.model, {
                name: (lambda module, i=i: _Replay(self._slots, i))
                for i, name in enumerate(self.names)})
        inside = tuple(name + "." for name in self.names)
        outside = {k: v for k, v in params.items() if not k.startswith(inside)}
        self._slots[:] = list(values)
        try:
            return self._replaying(outside, x)
        finally:
            self._slots.clear()

    def gradients(self, params: Params, x: Tensor, target: Target, rows: Tensor | None = None,
                  *, at: Sequence[Tensor] | None = None, input: bool = False) -> Tapped:
        """Gradient of the summed target score with respect to each tapped layer output.

        By default the gradient is taken at the layers' own outputs (a zero perturbation is
        added to each). With `at`, each layer output is REPLACED by `at[i]` (same shape) and the
        gradient is taken there (layer integrated gradients, conductance). `rows` maps rows of x
        to examples of `target`. With `input=True` the input gradient comes back too.
        """
        perturb = at is None
        start = ([torch.zeros(shape, dtype=dtype, device=device)
                  for shape, dtype, device in self.shapes(params, x)] if perturb else list(at))

        def objective(values: list[Tensor], inputs: Tensor) -> tuple[Tensor, tuple]:
            def place(i: int, t: Tensor) -> Tensor:
                value = self._fits(i, values[i], t)
                return t + value if perturb else value

            out, acts = self.run(params, inputs, place)
            chosen = target.select(out, rows)
            return chosen.sum(), (acts, chosen)

        argnums = (0, 1) if input else 0
        plain = plain_autograd_suffices(self.model, params, x, target, *start)
        result, (acts, chosen) = gradient_with_aux(objective, argnums, plain)(start, x)
        layer_grads, input_grad = result if input else (result, None)
        if not perturb:
            acts = list(at)
        return Tapped(list(layer_grads), acts, chosen, input_grad)

    def _fits(self, i: int, value: Tensor, t: Tensor) -> Tensor:
        if value.shape != t.shape:
            raise FattrError(f"{self.method}: the value put at layer {self.names[i]!r} has shape "
                             f"{tuple(value.shape)}, but the layer's output has shape "
                             f"{tuple(t.shape)}.")
        return value


def empty_layer_output(tap: Tap, reshape: Callable[[Tensor], Tensor] | None = None,
                       ) -> Callable[[Tensor], Tensor]:
    """`empty=` for layer methods: an empty batch shaped like the (reshaped) layer output.

    The shape comes from a probing forward pass of the empty batch with the module's own
    parameters (an empty batch carries no values, only shapes).
    """
    from fattr.core.model import functional

    def empty(x: Tensor) -> Tensor:
        (shape, dtype, device), *_ = tap.shapes(functional(tap.module)[1], x)
        value = torch.zeros(shape, dtype=dtype, device=device)
        return reshape(value) if reshape is not None else value

    return empty
