"""Layer taps: read, perturb or replace a named layer's output inside one functional call.

A tap is a set of forward hooks on the user's module, registered for ONE call of the model
function and removed in `finally`, also when the call raises. Forward hooks run inside
`torch.func.functional_call` under `grad` and `vmap`; backward hooks do not (under
`torch.func.grad`), so a layer's gradient comes from a zero perturbation added to its output
and differentiated with `torch.func.grad` (the Flax `perturb` idea). Everything is plain torch
ops, so tapped quantities stay differentiable in `params` and `x`.

A tap reads a layer's OUTPUT (forward hooks) or, with `side="input"`, its positional INPUTS
(forward pre-hooks; captum's `attribute_to_layer_input`), so a layer whose input is the model's
own input works too. A layer that returns (or takes) several tensors gives several "slots",
one per tensor, in order; layer methods attribute each and return a tuple, never silently the
first. A tapped layer must run once per forward pass: a module that is called twice (a shared
ReLU) has no single output, and the tap says so instead of picking one.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any, NamedTuple, Union

import torch
from torch import Tensor, nn

from fattr.core.call import Call
from fattr.core.gradients import gradient_with_aux, plain_autograd_suffices
from fattr.core.inputs import Inputs
from fattr.core.model import FunctionalModel, Model, Params
from fattr.errors import FattrError, FattrTypeError
from fattr.rules.apply import under_rules

LayerSpec = Union[str, nn.Module]
Edit = Callable[[int, Tensor], Tensor]  # (slot, tensor) -> what the model continues with
Slot = tuple[int, int]                  # (layer index, position of the tensor in its output)
SIDES = ("output", "input")


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


def _split(value: Any) -> tuple[list[Tensor], Callable[[list[Tensor]], Any]]:
    """The tensors of a layer's output (or input args) and how to rebuild it with new ones."""
    if isinstance(value, Tensor):
        return [value], lambda new: new[0]
    if isinstance(value, (tuple, list)):
        where = [i for i, v in enumerate(value) if isinstance(v, Tensor)]

        def rebuild(new: list[Tensor]) -> Any:
            items = list(value)
            for i, t in zip(where, new):
                items[i] = t
            if isinstance(value, list):
                return items
            return type(value)(*items) if hasattr(value, "_fields") else type(value)(items)

        return [value[i] for i in where], rebuild
    return [], lambda new: value


class _Stop(BaseException):
    """Ends a forward pass once every tapped layer has run (never escapes a tap)."""


def layer_hooks(names: Sequence[str], on_tensor: Callable[[Slot, Tensor], Tensor], method: str,
                side: str = "output", stop_after: bool = False,
                plain: dict[int, bool] | None = None) -> list[Callable[..., Any]]:
    """One hook per named layer: `hook(module, args, output) -> new output` for the output
    side, `hook(module, args) -> new args` for the input side.

    `on_tensor((i, j), t)` sees tensor j of layer `names[i]`'s output (or positional inputs)
    and returns what the model continues with. With `stop_after`, the forward pass ends
    (raising `_Stop`) once every layer has run. A layer that runs twice raises. `plain[i]`
    records whether layer i's output was a plain tensor.
    """
    calls = [0] * len(names)

    def visit(i: int, value: Any) -> Any:
        calls[i] += 1
        if calls[i] > 1:
            raise FattrError(
                f"{method}: layer {names[i]!r} ran {calls[i]} times in one forward pass "
                "(the module is reused), so it has no single output to tap. Tap a module "
                "that runs once, such as the block that contains it.")
        if plain is not None:
            plain[i] = isinstance(value, Tensor)
        tensors, rebuild = _split(value)
        if not tensors:
            what = "inputs" if side == "input" else "output"
            raise FattrError(f"{method}: layer {names[i]!r} has no tensor {what} to tap (got "
                             f"{type(value).__name__}). Tap a submodule whose {what} is a "
                             "tensor or a tuple of tensors.")
        new = rebuild([on_tensor((i, j), t) for j, t in enumerate(tensors)])
        if stop_after and all(calls):
            raise _Stop
        return new

    if side == "input":
        return [lambda _, args, i=i: visit(i, tuple(args)) for i in range(len(names))]
    return [lambda _, __, output, i=i: visit(i, output) for i in range(len(names))]


@contextmanager
def hooked(module: nn.Module, names: Sequence[str], on_tensor: Callable[[Slot, Tensor], Tensor],
           method: str, side: str = "output", stop_after: bool = False,
           plain: dict[int, bool] | None = None) -> Iterator[None]:
    """The `layer_hooks` registered on the named submodules for the duration of the block (a
    `stop_after` stop ends the forward pass silently); removed in `finally`."""
    modules = dict(module.named_modules(remove_duplicate=False))
    handles = []
    try:
        for name, hook in zip(names, layer_hooks(names, on_tensor, method, side, stop_after,
                                                 plain)):
            register = modules[name].register_forward_pre_hook if side == "input" else \
                modules[name].register_forward_hook
            handles.append(register(hook))
        yield
    except _Stop:
        pass
    finally:
        for handle in handles:
            handle.remove()


def _with_hook(module: nn.Module, hook: Callable[..., Any], side: str) -> None:
    """Makes `module` (a node of a rewritten copy) call `hook` on its inputs or its output, as
    a registered hook would."""
    forward = module.forward

    def hooked_forward(*args: Any, **kwargs: Any) -> Any:
        if side == "input":
            new = hook(module, args)
            return forward(*(args if new is None else new), **kwargs)
        output = forward(*args, **kwargs)
        new = hook(module, args, output)
        return output if new is None else new

    module.forward = hooked_forward  # an instance attribute of the copy only


def compiled_hooks(model: Model, names: Sequence[str], hooks: Sequence[Callable[..., Any]],
                   side: str) -> Model:
    """`model` whose named layers call their hooks, in a rewritten copy of the module tree:
    torch.compile cannot trace hook registration (`RemovableHandle` ids), but traces this."""
    hook_of = dict(zip(names, hooks))

    def install(name: str, module: nn.Module) -> None:
        if name in hook_of:
            _with_hook(module, hook_of[name], side)
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
    """What a tapped gradient pass returns (lists follow the tap's slots)."""

    gradients: list[Tensor]        # d (summed target score) / d each tapped tensor
    activations: list[Tensor]      # the tapped tensors (the given values when replaced)
    scores: Tensor                 # the target score of each row, (N,)
    input_gradient: tuple | None   # d score / d inputs when asked for


RunWith = Callable[[Model], Any]  # runs the forward pass with the given (maybe hooked) model
Probe = tuple[torch.Size, torch.dtype, torch.device]


class Tap:
    """Taps on named layers of a model, resolved once (in a method's constructor).

    `read` gives the tapped tensors (running the model only up to the last tapped layer), `run`
    gives the model output with the tapped tensors replaced by `edit`, and `gradients` gives the
    gradient of the target score with respect to the tapped tensors (or to values put in their
    place). The slots (one per tensor a layer returns or takes) and their shapes for a given
    input shape are found once by a probing no-grad forward pass, which also checks that each
    layer runs exactly once. Every evaluation takes the `Call` (for the extra forward arguments
    and the target) and the example index of each row.
    """

    def __init__(self, model: Model, layers: LayerSpec | Sequence[LayerSpec], method: str, *,
                 side: str = "output"):
        if side not in SIDES:
            raise FattrError(f"{method}: a layer is tapped at its 'output' or its 'input', got "
                             f"{side!r}.")
        self.model = model
        self.module = model.require_module()
        many = isinstance(layers, (list, tuple))
        self.names = tuple(layer_name(self.module, layer, method)
                           for layer in (layers if many else [layers]))
        if not self.names:
            raise FattrError(f"{method}: no layers to tap; pass at least one layer name.")
        self.method = method
        self.side = side
        self._shapes: dict[tuple, dict[Slot, Probe]] = {}
        self._plain: dict[int, bool] = {}  # whether each layer returned a plain tensor
        self._values: list[Tensor] = []    # what the layers return in `replayed`
        self._replaying: Model | None = None

    # -- running the model under hooks ------------------------------------------------------

    def _hooked_run(self, run_with: RunWith, on_tensor: Callable[[Slot, Tensor], Tensor],
                    stop_after: bool = False) -> Any:
        """`run_with(model)` with `on_tensor` applied to each tapped tensor (None when
        `stop_after` ended the pass early): hooks on the user's module, or, while
        torch.compile traces a model from `fattr.functional`, the same hooks in a rewritten copy
        (`compiled_hooks`; no early stop there)."""
        if torch.compiler.is_compiling() and isinstance(self.model.fn, FunctionalModel):
            hooks = layer_hooks(self.names, on_tensor, self.method, self.side, plain=self._plain)
            return run_with(compiled_hooks(self.model, self.names, hooks, self.side))
        with hooked(self.module, self.names, on_tensor, self.method, self.side, stop_after,
                    self._plain):
            return run_with(self.model)
        return None

    @staticmethod
    def _key(inputs: tuple) -> tuple:
        return tuple((tuple(t.shape), t.dtype, t.device) for t in inputs)

    def _probe(self, forward: RunWith, key: tuple) -> list[Slot]:
        """The slots for inputs of this shape (probed once, without gradients)."""
        if key not in self._shapes:
            seen: dict[Slot, Probe] = {}

            def record(slot: Slot, t: Tensor) -> Tensor:
                seen[slot] = (t.shape, t.dtype, t.device)
                return t

            with torch.no_grad():
                self._hooked_run(forward, record, stop_after=True)
            self._check_ran({i for i, _ in seen})
            self._shapes[key] = dict(sorted(seen.items()))
        return list(self._shapes[key])

    def _check_ran(self, ran: set[int]) -> None:
        missing = [n for i, n in enumerate(self.names) if i not in ran]
        if missing:
            raise FattrError(f"{self.method}: layer {missing[0]!r} did not run in the forward "
                             "pass, so it has no output to tap. Pick a layer that the model's "
                             "forward() calls.")

    def _read(self, forward: RunWith, key: tuple) -> list[Tensor]:
        slots = self._probe(forward, key)  # checks, once per input shape, that layers run once
        seen: dict[Slot, Tensor] = {}

        def record(slot: Slot, t: Tensor) -> Tensor:
            seen[slot] = t  # the model goes on with a copy while more layers are to come
            return t if len(seen) == len(slots) else t.clone()

        self._hooked_run(forward, record, stop_after=True)
        return [seen[slot] for slot in slots]

    def _run(self, forward: RunWith, key: tuple, edit: Edit | None) -> tuple[Any, list[Tensor]]:
        # one layer: slot (0, j) is tensor j; several: their order comes from a probe
        index = None if len(self.names) == 1 else {
            slot: k for k, slot in enumerate(self._probe(forward, key))}
        seen: dict[Slot, Tensor] = {}

        def record(slot: Slot, t: Tensor) -> Tensor:
            seen[slot] = t
            k = slot[1] if index is None else index[slot]
            new = edit(k, t) if edit is not None else t
            return t.clone() if new is t else new

        out = self._hooked_run(forward, record)
        self._check_ran({i for i, _ in seen})
        return out, [seen[slot] for slot in sorted(seen)]

    @staticmethod
    def _forward(params: Params, call: Call, inputs: Inputs, rows: Tensor | None) -> RunWith:
        return lambda model: call.run(model, params, inputs, rows)

    # -- what methods use ------------------------------------------------------------------

    def shapes(self, params: Params, call: Call, inputs: Inputs, rows: Tensor | None = None,
               ) -> list[Probe]:
        """(shape, dtype, device) of each slot for rows like `inputs`."""
        key = self._key(inputs)
        self._probe(self._forward(params, call, inputs, rows), key)
        return list(self._shapes[key].values())

    def read(self, params: Params, call: Call, inputs: Inputs, rows: Tensor | None = None,
             ) -> list[Tensor]:
        """The tapped tensors, one per slot; the model runs only up to the last tapped layer."""
        return self._read(self._forward(params, call, inputs, rows), self._key(inputs))

    def run(self, params: Params, call: Call, inputs: Inputs, rows: Tensor | None = None,
            edit: Edit | None = None) -> tuple[Any, list[Tensor]]:
        """(model output, tapped tensors) with each tapped tensor t_k replaced by edit(k, t_k).

        The recorded tensors are the layers' own, before the edit; the model continues with a
        copy when there is no edit, so in-place operations later in the model cannot change
        what was recorded.
        """
        return self._run(self._forward(params, call, inputs, rows), self._key(inputs), edit)

    def one(self, values: Sequence[Tensor]) -> Tensor:
        """The only tapped tensor, for methods that need exactly one (CAMs, neurons)."""
        if len(values) != 1:
            what = "takes" if self.side == "input" else "returns"
            raise FattrError(f"{self.method}: layer {self.names[0]!r} {what} {len(values)} "
                             "tensors, but this method needs one. Tap a submodule that "
                             f"{what} a single tensor.")
        return values[0]

    def pack(self, values: Sequence[Tensor]) -> Tensor | tuple[Tensor, ...]:
        """Per-slot results as the caller expects them: a tensor for a layer that returned a
        plain tensor, a tuple (one entry per tensor) for a tuple output or for inputs."""
        if self.side == "output" and len(values) == 1 and self._plain.get(0, True):
            return values[0]
        return tuple(values)

    def replayed(self, params: Params, call: Call, inputs: Inputs, rows: Tensor | None,
                 values: Sequence[Tensor]) -> Any:
        """The model output with each tapped layer's output replaced by `values[k]`, without
        computing those layers: a rewritten copy of the module tree (the user's module is not
        touched) in which each layer returns its value, pytorch-grad-cam's AblationCAM trick.
        A layer seen returning a tuple (by an earlier `run`, `read` or `shapes`), an input
        tap, or a model not from `fattr.functional` is computed and replaced instead."""
        replayable = self.side == "output" and isinstance(self.model.fn, FunctionalModel) \
            and all(self._plain.get(i, False) for i in range(len(self.names)))
        if not replayable:
            out, _ = self.run(params, call, inputs, rows, lambda k, _: values[k])
            return out
        if self._replaying is None:
            self._replaying = under_rules(self.model, {
                name: (lambda module, i=i: _Replay(self._values, i))
                for i, name in enumerate(self.names)})
        inside = tuple(name + "." for name in self.names)
        outside = {k: v for k, v in params.items() if not k.startswith(inside)}
        self._values[:] = list(values)
        try:
            return call.run(self._replaying, outside, inputs, rows)
        finally:
            self._values.clear()

    def gradients(self, params: Params, call: Call, inputs: Inputs, rows: Tensor | None = None,
                  *, at: Sequence[Tensor] | None = None, input: bool = False) -> Tapped:
        """Gradient of the summed target score with respect to each tapped tensor.

        By default the gradient is taken at the layers' own tensors (a zero perturbation is
        added to each). With `at`, each tapped tensor is REPLACED by `at[k]` (same shape) and
        the gradient is taken there (layer integrated gradients, conductance). `rows` maps rows
        of the inputs to examples. With `input=True` the input gradients come back too.
        """
        perturb = at is None
        start = ([torch.zeros(shape, dtype=dtype, device=device)
                  for shape, dtype, device in self.shapes(params, call, inputs, rows)]
                 if perturb else list(at))

        def objective(values: list[Tensor], xs: Inputs) -> tuple[Tensor, tuple]:
            def place(k: int, t: Tensor) -> Tensor:
                value = self._fits(k, values[k], t)
                return t + value if perturb else value

            out, acts = self.run(params, call, xs, rows, place)
            chosen = call.target.select(out, rows)
            return chosen.sum(), (acts, chosen)

        argnums = (0, 1) if input else 0
        plain = plain_autograd_suffices(self.model, params, call, *start)
        result, (acts, chosen) = gradient_with_aux(objective, argnums, plain)(start, inputs)
        layer_grads, input_grad = result if input else (result, None)
        if not perturb:
            acts = list(at)
        return Tapped(list(layer_grads), acts, chosen, input_grad)

    def _fits(self, k: int, value: Tensor, t: Tensor) -> Tensor:
        if value.shape != t.shape:
            raise FattrError(f"{self.method}: the value put at layer {self.names[0]!r} has shape "
                             f"{tuple(value.shape)}, but the tapped tensor has shape "
                             f"{tuple(t.shape)}.")
        return value


def empty_layer_output(tap: Tap, reshape: Callable[[Tensor], Tensor] | None = None,
                       ) -> Callable[[Call], Any]:
    """`empty=` for layer methods: an empty batch shaped like the (reshaped) tapped tensors.

    The shapes come from a probing forward pass of the empty batch with the module's own
    parameters (an empty batch carries no values, only shapes).
    """
    from fattr.core.model import functional

    def empty(call: Call) -> Any:
        probes = tap.shapes(functional(tap.module)[1], call, call.inputs)
        values = [torch.zeros(shape, dtype=dtype, device=device)
                  for shape, dtype, device in probes]
        return tap.pack([reshape(v) if reshape is not None else v for v in values])

    return empty
