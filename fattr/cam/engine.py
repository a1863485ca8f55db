"""The CAM engine: a layer's maps (activations A, gradients G) -> one class activation map.

Every CAM taps one layer, turns its output (reshaped to (B, C, *spatial) for token layers)
into a map (B, *spatial), applies the optional ReLU and upsamples to the input size. The named
methods only say how A and G combine.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Union

import torch
import torch.nn.functional as F
from torch import Tensor

from fattr.core.call import Call, attribution
from fattr.core.inputs import Inputs
from fattr.core.model import ModelFn, Params, as_model, functional
from fattr.errors import FattrError, FattrTypeError
from fattr.layers.taps import LayerSpec, Tap

Reshape = Union[Callable[[Tensor], Tensor], None]
Combine = Callable[[Tensor, Union[Tensor, None]], Tensor]
Upsample = Union[bool, str]

MODES = ("bilinear", "nearest", "nearest-exact", "bicubic", "area")
_LINEAR = {1: "linear", 2: "bilinear", 3: "trilinear"}


def upsample_mode(upsample: Upsample, method: str) -> str | None:
    """True -> 'bilinear', False -> None (layer size), or an interpolation mode by name."""
    if upsample is True:
        return "bilinear"
    if upsample is False:
        return None
    if isinstance(upsample, str) and upsample in MODES:
        return upsample
    raise FattrError(f"{method}: upsample must be True (bilinear), False (keep the layer's "
                     f"size) or one of {', '.join(MODES)}; got {upsample!r}.")


def resize(maps: Tensor, size: tuple[int, ...], mode: str, method: str = "resize",
           align_corners: bool = False) -> Tensor:
    """(B, K, *s) -> (B, K, *size) with `F.interpolate` (align_corners False by default).

    'bilinear' means the linear mode of the spatial rank (linear, bilinear, trilinear).
    """
    size = tuple(size)
    if maps.ndim - 2 != len(size):
        raise FattrError(f"{method}: cannot upsample a map with spatial shape "
                         f"{tuple(maps.shape[2:])} to the input's spatial shape {size}. For a "
                         "transformer token layer (B, N, C), pass reshape=fattr.tokens_to_grid(1) "
                         "(ViT; layout='bhwc' for Swin) to lay the tokens out on their grid.")
    if tuple(maps.shape[2:]) == size:
        return maps
    if mode == "bilinear":
        if len(size) not in _LINEAR:
            raise FattrError(f"{method}: linear upsampling covers 1 to 3 spatial axes, got "
                             f"{len(size)}; pass upsample='nearest' or False.")
        mode = _LINEAR[len(size)]
    align = align_corners if mode in ("linear", "bilinear", "trilinear", "bicubic") else None
    return F.interpolate(maps, size=size, mode=mode, align_corners=align)


def minmax(t: Tensor, dims: tuple[int, ...], eps: float) -> Tensor:
    """(t - min) / (max - min + eps) over `dims` (kept), differentiable."""
    low = t.amin(dims, keepdim=True)
    return (t - low) / (t.amax(dims, keepdim=True) - low + eps)


class LayerCam:
    """The static configuration every CAM shares: model, tapped layer, reshape, ReLU, upsample."""

    def __init__(self, f: ModelFn, layer: LayerSpec, relu: bool, upsample: Upsample,
                 reshape: Reshape, output: Callable[[Any], Tensor] | None, method: str):
        if not isinstance(relu, bool):
            raise FattrError(f"{method}: relu must be True or False, got {relu!r}.")
        if reshape is not None and not callable(reshape):
            raise FattrTypeError(f"{method}: reshape must be a callable from the layer output to "
                                 f"(B, C, h, w) maps, such as fattr.tokens_to_grid(), got "
                                 f"{type(reshape).__name__}.")
        self.method = method
        self.model = as_model(f, output, method)
        self.tap = Tap(self.model, layer, method)
        self.relu = relu
        self.mode = upsample_mode(upsample, method)
        self.reshape = reshape

    @property
    def layer(self) -> str:
        return self.tap.names[0]

    def grid(self, t: Tensor) -> Tensor:
        """The layer output (or its gradient) as (B, C, *spatial) maps."""
        maps = self.reshape(t) if self.reshape is not None else t
        if maps.ndim < 3:
            raise FattrError(
                f"{self.method}: layer {self.layer!r} gives maps of shape {tuple(maps.shape)}, "
                "but a CAM needs (B, C, *spatial). Pick a convolutional layer, or pass "
                "reshape=fattr.tokens_to_grid(...) for transformer tokens.")
        return maps

    def activations(self, params: Params, call: Call, inputs: Inputs | None = None,
                    rows: Tensor | None = None) -> Tensor:
        """A: the layer's activations (B, C, *s) for the call's inputs (or rows of others)."""
        inputs = call.inputs if inputs is None else inputs
        return self.grid(self.tap.one(self.tap.read(params, call, inputs, rows)))

    def maps(self, params: Params, call: Call, inputs: Inputs | None = None,
             rows: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """(A, G): the layer's activations and the target score's gradient, both (B, C, *s)."""
        inputs = call.inputs if inputs is None else inputs
        tapped = self.tap.gradients(params, call, inputs, rows)
        return self.grid(self.tap.one(tapped.activations)), \
            self.grid(self.tap.one(tapped.gradients))

    def finish(self, cam: Tensor, call: Call) -> Tensor:
        """(B, *s) -> (B, 1, *s) with the optional ReLU, upsampled to the spatial size of the
        (first) input."""
        cam = cam.unsqueeze(1)
        if self.relu:
            cam = F.relu(cam)
        return resize(cam, call.first.shape[2:], self.mode, self.method) if self.mode else cam

    def empty(self, call: Call) -> Tensor:
        x = call.first
        if self.mode:
            return x.new_zeros((0, 1, *x.shape[2:]))
        (shape, dtype, device), *_ = self.tap.shapes(functional(self.tap.module)[1], call,
                                                     call.inputs)
        maps = self.grid(torch.zeros(shape, dtype=dtype, device=device))
        return maps.new_zeros((0, 1, *maps.shape[2:]))

    def attribution(self, compute: Callable[..., Tensor], doc: str | None,
                    gradient: bool = False) -> Callable[..., Tensor]:
        return attribution(self.model, compute, gradient=gradient, empty=self.empty, doc=doc)


def cam_method(f: ModelFn, layer: LayerSpec, combine: Combine, *, relu: bool, upsample: Upsample,
               reshape: Reshape, output: Callable[[Any], Tensor] | None, method: str,
               doc: str | None, uses_gradient: bool = True) -> Callable[..., Tensor]:
    """A CAM defined by `combine(A, G) -> (B, *spatial)` (G is None without gradients)."""
    cam = LayerCam(f, layer, relu, upsample, reshape, output, method)

    def compute(params: Params, call: Call) -> Tensor:
        if uses_gradient:
            a, g = cam.maps(params, call)
        else:
            call.check_target(cam.model, params)
            a, g = cam.activations(params, call), None
        return cam.finish(combine(a, g), call)

    return cam.attribution(compute, doc)


def spatial(t: Tensor) -> tuple[int, ...]:
    """The spatial axes of (B, C, *spatial) maps."""
    return tuple(range(2, t.ndim))
