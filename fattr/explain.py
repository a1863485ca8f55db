"""`fattr.explain`: any method by name on a module and a batch, in one line.

The functional API stays the way to compose, vmap and differentiate attributions; `explain` is
the entry for looking at one: it builds the method from `fattr.registry.METHODS`, picks the
predicted class, a default layer for CAMs and layer methods, and can save a figure.
"""

from __future__ import annotations

import difflib
import inspect
import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from fattr.core.model import ModelFn, Params, functional
from fattr.errors import FattrError, FattrTypeError
from fattr.layers.grid import tokens_to_grid
from fattr.layers.taps import layer_name
from fattr.registry import METHODS, MethodInfo

# What a wrapper wraps when no `attr_fn=` / `cam_fn=` is given (a name in METHODS or a function).
INNER = {"smoothgrad": "saliency", "smoothgrad_sq": "saliency", "vargrad": "saliency",
         "xrai": "integrated_gradients"}
GUIDED = ("guided_backprop", "gradcam")
# Per-call arguments routed to the call even when a constructor takes **options (lrp).
CALL_ARGUMENTS = frozenset({"baseline", "baselines", "generator", "feature_mask", "layer_mask",
                           "model_args", "model_kwargs", "segments"})
POOLING = ("Pool", "Dropout", "Identity", "Flatten")


def explain(model: nn.Module, x: Tensor, method: str = "gradcam", target: Any = None, *,
            layer: str | nn.Module | None = None, save: str | Path | None = None,
            **method_kwargs: Any) -> Tensor:
    """Attribute `model`'s decision on the batch `x` with any fattr method, named.

    The three-line entry (ADGT's `pure_explain`): everything else stays the functional API.

    - `method`: a name from `fattr.registry.METHODS` ("saliency", "integrated_gradients",
      "lrp", "gradcam", "occlusion", "xrai", ...; an unknown name lists the close ones).
    - `target`: as for every method (int, per-example tensor, callable...); `None` explains
      the predicted class, `argmax` of the output (B, classes).
    - `layer`: for CAMs and layer methods; `None` picks the last convolutional block (the last
      module, pooling aside, whose output is a (B, C, h, w) map with h * w > 1) or, in a model
      with attention modules, the input norm of the last attention block (e.g. a ViT's
      `encoder.layers.encoder_layer_11.ln_1`), with the token grid inferred by
      `fattr.tokens_to_grid` (the prefix tokens are those beyond the largest square).
    - `save`: a path (.png, .pdf, ...): the inputs and their maps in one `fattr.viz.grid`.
    - `method_kwargs`: options of the constructor (`steps=`, `composite=`, `batch_size=`,
      `output=`...) and of the call (`baseline=`, `generator=`, `feature_mask=`...), routed by
      the constructor's signature. Wrappers take `attr_fn=` (SmoothGrad family: default
      "saliency"; XRAI: "integrated_gradients") and `guided` takes `attr_fn=` and `cam_fn=`
      (default "guided_backprop" and "gradcam"), each a method name or a function. `occlusion`
      takes `window=` (default: all channels and an eighth of each spatial side, stride half
      of it); `neuron_conductance` needs `neuron=`.

    Returns the attribution Tensor (the method's shape: like x, (B, 1, H, W) for CAMs, the
    layer's shape for layer methods). The model is not modified; put it in eval mode first.

    >>> a = fattr.explain(model.eval(), x)                          # Grad-CAM, predicted class
    >>> a = fattr.explain(model, x, "integrated_gradients", target=labels, steps=32)
    >>> a = fattr.explain(vit, x, "layercam", save="out/vit_layercam.png")
    """
    f, params = functional(model)
    attr, call_kwargs = build(f, params, x, method, layer=layer, **method_kwargs)
    chosen = predicted(f, params, x, method_kwargs.get("output")) if target is None else target
    attribution = attr(params, x, chosen, **call_kwargs)
    if save is not None:
        _save(attribution, x, method, save)
    return attribution


def method_info(method: str, caller: str = "explain") -> MethodInfo:
    """The registry entry of `method`, or an error (starting with `caller`) that lists the close
    names."""
    if not isinstance(method, str):
        raise FattrTypeError(f"{caller}: method must be a name from fattr.registry.METHODS, got "
                             f"{type(method).__name__}. Call the constructor directly to pass "
                             "a function.")
    if method not in METHODS:
        close = difflib.get_close_matches(method, METHODS, n=3, cutoff=0.5)
        hint = f"Did you mean {', '.join(map(repr, close))}? " if close else ""
        raise FattrError(f"{caller}: unknown method {method!r}. {hint}Known methods: "
                         f"{', '.join(METHODS)}.")
    return METHODS[method]


def build(f: ModelFn, params: Params, x: Tensor, method: str, *,
          layer: str | nn.Module | None = None,
          **method_kwargs: Any) -> tuple[Callable[..., Tensor], dict[str, Any]]:
    """The attribution function of `method` and the keyword arguments for its call.

    `method_kwargs` are split by the constructor's signature; the defaults of `explain` (layer,
    token grid, inner methods, occlusion window) are filled in.
    """
    info = method_info(method)
    kwargs = dict(method_kwargs)
    if info.takes == "attr_fn":
        inner = _inner(kwargs.pop("attr_fn", INNER[method]), f, params, x, layer)
        return _split(info, (inner,), kwargs)
    if info.takes == "attr_fn_cam":
        attr_fn = _inner(kwargs.pop("attr_fn", GUIDED[0]), f, params, x, layer)
        cam_fn = _inner(kwargs.pop("cam_fn", GUIDED[1]), f, params, x, layer)
        return _split(info, (attr_fn, cam_fn), kwargs)
    if info.takes == "model_window":
        window = kwargs.pop("window", None)
        if window is None:
            window, kwargs["stride"] = _window(x)
        return _split(info, (f, window), kwargs)
    if info.takes == "model":
        return _split(info, (f,), kwargs)
    module = _module_of(f, method)
    probe = Probe.run(module, f, params, x)
    name = probe.default_layer(method) if layer is None else probe.name_of(layer, method)
    if "reshape" in _parameters(info) and "reshape" not in kwargs:
        kwargs["reshape"] = probe.reshape(name)
    positional: tuple[Any, ...] = (f, name)
    if info.takes == "model_layer_neuron":
        if "neuron" not in kwargs:
            raise FattrError(f"explain: {method} needs neuron= (an int over the flattened "
                             f"neurons of layer {name!r}, or a tuple index), as "
                             f"fattr.{method}(f, layer, neuron) does.")
        positional = (f, name, kwargs.pop("neuron"))
    return _split(info, positional, kwargs)


def predicted(f: ModelFn, params: Params, x: Any,
              output: Callable[[Any], Tensor] | None = None) -> Tensor:
    """The predicted class of each example: argmax of the output (B, classes), shape (B,)."""
    with torch.no_grad():
        out = _forward(f, params, x)
        out = output(out) if output is not None else out
    if not isinstance(out, Tensor) or out.ndim != 2:
        got = tuple(out.shape) if isinstance(out, Tensor) else type(out).__name__
        raise FattrError(f"explain: target=None explains the predicted class, the argmax of a "
                         f"(B, classes) output; the model returned {got}. Pass target= (or "
                         "output= to pick the logits).")
    return out.argmax(1)


@dataclass
class Probe:
    """One forward pass with every module's output shape and call count, in finishing order."""

    module: nn.Module
    order: list[str]
    shapes: dict[str, tuple[int, ...] | None]
    calls: dict[str, int]

    @classmethod
    def run(cls, module: nn.Module, f: ModelFn, params: Params, x: Any) -> Probe:
        probe = cls(module, [], {}, {})

        def record(name: str) -> Callable[..., None]:
            def hook(_: nn.Module, __: Any, out: Any) -> None:
                first = out[0] if isinstance(out, (tuple, list)) and out else out
                probe.calls[name] = probe.calls.get(name, 0) + 1
                probe.shapes[name] = tuple(first.shape) if isinstance(first, Tensor) else None
                probe.order.append(name)
            return hook

        handles = []
        try:
            for name, sub in module.named_modules():
                if name:
                    handles.append(sub.register_forward_hook(record(name)))
            with torch.no_grad():
                _forward(f, params, x)
        finally:
            for handle in handles:
                handle.remove()
        return probe

    def _once(self) -> list[str]:
        """Modules that ran exactly once, in the order they finished."""
        return [n for n in self.order if self.calls[n] == 1]

    def default_layer(self, method: str) -> str:
        modules = dict(self.module.named_modules())
        attention = [n for n, m in modules.items() if _is_attention(m)]
        blocks = {n.rpartition(".")[0] for n in attention} - set(attention) - {""}
        ran = self._once()
        last_block = [n for n in ran if n in blocks]
        if last_block:
            block = last_block[-1]
            norms = [f"{block}.{c}" for c, m in modules[block].named_children()
                     if isinstance(m, nn.LayerNorm) and self.calls.get(f"{block}.{c}") == 1]
            return norms[0] if norms else block
        maps = [n for n in ran if _spatial(self.shapes[n])
                and not any(p in type(modules[n]).__name__ for p in POOLING)]
        if not maps:
            raise FattrError(f"explain: {method} needs a layer and the model "
                             f"{type(self.module).__name__} has no convolutional map "
                             "(B, C, h, w) with h * w > 1 nor attention block to default to. "
                             "Pass layer= (a dotted name from model.named_modules()).")
        return maps[-1]

    def name_of(self, layer: str | nn.Module, method: str) -> str:
        return layer_name(self.module, layer, f"explain({method})")

    def reshape(self, name: str) -> Callable[[Tensor], Tensor] | None:
        """`tokens_to_grid` for token outputs (B, N, C) and channels-last (B, H, W, C) norms."""
        shape = self.shapes.get(name)
        module = dict(self.module.named_modules())[name]
        if shape is not None and len(shape) == 3:
            return tokens_to_grid(prefix_tokens=_prefix_tokens(shape[1]))
        channels_last = (isinstance(module, nn.LayerNorm) and shape is not None
                         and len(shape) == 4 and tuple(module.normalized_shape) == shape[-1:])
        return tokens_to_grid(layout="bhwc") if channels_last else None


def _is_attention(module: nn.Module) -> bool:
    return isinstance(module, nn.MultiheadAttention) or "Attention" in type(module).__name__


def _spatial(shape: tuple[int, ...] | None) -> bool:
    return shape is not None and len(shape) == 4 and shape[2] * shape[3] > 1


def _prefix_tokens(n: int) -> int:
    """Tokens before the grid: n minus the largest square below n (CLS: 197 = 1 + 14 * 14)."""
    return n - math.isqrt(n) ** 2


def _forward(f: ModelFn, params: Params, x: Any) -> Any:
    return f(params, *x) if isinstance(x, tuple) else f(params, x)


def _module_of(f: ModelFn, method: str) -> nn.Module:
    module = getattr(f, "module", None)
    if not isinstance(module, nn.Module):
        raise FattrTypeError(f"explain: {method} taps a layer of the module; pass an nn.Module.")
    return module


def _parameters(info: MethodInfo) -> dict[str, inspect.Parameter]:
    return dict(inspect.signature(info.build).parameters)


def _split(info: MethodInfo, positional: tuple[Any, ...],
           kwargs: dict[str, Any]) -> tuple[Callable[..., Tensor], dict[str, Any]]:
    """Build with the options the constructor names (all but per-call ones when it takes
    **options); the rest go to the call."""
    parameters = _parameters(info)
    open_ended = any(p.kind is p.VAR_KEYWORD for p in parameters.values())
    named = set(list(parameters)[len(positional):])
    options = {k: v for k, v in kwargs.items()
               if k in named or (open_ended and k not in CALL_ARGUMENTS)}
    call = {k: v for k, v in kwargs.items() if k not in options}
    return info.build(*positional, **options), call


def _inner(method: Any, f: ModelFn, params: Params, x: Tensor,
           layer: str | nn.Module | None) -> Callable[..., Tensor]:
    if callable(method):
        return method
    return build(f, params, x, method, layer=layer)[0]


def _window(x: Tensor) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """Occlusion's default: all channels and an eighth of each spatial side, half-overlapping."""
    if x.ndim < 3:
        return (1,) * (x.ndim - 1), (1,) * (x.ndim - 1)
    sides = tuple(max(1, s // 8) for s in x.shape[2:])
    return (x.shape[1], *sides), (x.shape[1], *(max(1, s // 2) for s in sides))


def _save(attribution: Tensor, x: Any, method: str, path: str | Path) -> None:
    from fattr import viz

    images = x if isinstance(x, Tensor) and x.ndim == 4 and x.shape[1] in (1, 3) else None
    fig = viz.grid({method: attribution.detach().cpu()},
                   None if images is None else images.detach().cpu())
    viz.save(fig, path)
