"""FullGrad (Srinivas and Fleuret 2019)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor, nn

from fattr.cam.engine import minmax, resize
from fattr.core.call import Call, attribution, finish, prepare
from fattr.core.model import Model, ModelFn, Params, as_model
from fattr.core.targets import TargetSpec
from fattr.errors import FattrError
from fattr.layers.taps import Tap

_BatchNorm = nn.modules.batchnorm._BatchNorm


def bias_layers(module: nn.Module) -> list[str]:
    """Names of the layers that add a bias: conv and linear layers with one, and BatchNorm."""
    return [name for name, sub in module.named_modules()
            if isinstance(sub, _BatchNorm) or (isinstance(sub, (nn.modules.conv._ConvNd,
                                                                 nn.Linear))
                                               and sub.bias is not None)]


def _bias(params: Params, module: nn.Module, name: str, out: Tensor, method: str) -> Tensor:
    """The layer's (effective) bias, taken from `params`, broadcastable against its output."""
    sub = module.get_submodule(name)
    get = lambda attr: params.get(f"{name}.{attr}" if name else attr, getattr(sub, attr))
    if isinstance(sub, _BatchNorm):
        mean, var = get("running_mean"), get("running_var")
        if mean is None or var is None:
            raise FattrError(f"{method}: BatchNorm layer {name!r} keeps no running statistics, "
                             "so in eval mode it normalizes with batch statistics and has no "
                             "fixed bias. FullGrad needs track_running_stats=True.")
        scale = torch.rsqrt(var + sub.eps)
        weight, bias = get("weight"), get("bias")
        bias = (bias if bias is not None else 0) - mean * scale * (
            weight if weight is not None else 1)
    else:
        bias = get("bias")
    if isinstance(sub, nn.Linear):
        return bias  # along the last axis
    return bias.reshape(-1, *([1] * (out.ndim - 2)))


def full_gradients(model: Model, tap: Tap, params: Params, call: Call) -> dict[str, Tensor]:
    """{'input': x * df/dx, layer: df/d(layer output) * bias for every bias layer}."""
    tapped = tap.gradients(params, call, (call.x,), input=True)
    terms = {"input": call.x * tapped.input_gradient[0]}
    for name, g, out in zip(tap.names, tapped.gradients, tapped.activations):
        terms[name] = g * _bias(params, tap.module, name, out, model.method)
    return terms


def _tap(model: Model, method: str) -> Tap:
    names = bias_layers(model.require_module())
    if not names:
        raise FattrError(f"{method}: the model has no layer with a bias (conv, linear or "
                         "BatchNorm), so FullGrad reduces to input x gradient; use "
                         "fattr.input_x_gradient.")
    return Tap(model, names, method)


def fullgrad_terms(f: ModelFn, params: Params, x: Tensor, target: TargetSpec = None, *,
                   output: Callable[[Any], Tensor] | None = None, model_args: Any = (),
                   model_kwargs: dict[str, Any] | None = None) -> dict[str, Tensor]:
    """FullGrad's full-gradient decomposition of the target score, one tensor per term.

    Returns {"input": x * grad_x y, name: grad_z y * b for every layer `name` that adds a bias
    b to its output z} (conv and linear biases; BatchNorm's effective bias
    beta - mean * gamma / sqrt(var + eps)). For a network of ReLUs, max pooling and biased
    affine layers, the terms are complete:

        y_t(x) = sum(terms["input"]) + sum over layers of sum(terms[layer])

    (x has a batch axis; sums are per example.)

    >>> terms = fattr.fullgrad_terms(f, params, x, target=labels)
    """
    model = as_model(f, output, "fullgrad_terms")
    tap = _tap(model, "fullgrad_terms")
    call = prepare(model, x, target, model_args, model_kwargs, params=params)  # eval mode first
    return finish(model, full_gradients(model, tap, params, call))


def fullgrad(f: ModelFn, *, output: Callable[[Any], Tensor] | None = None,
             ) -> Callable[..., Tensor]:
    """FullGrad saliency: input-gradient and spatial bias-gradient maps, normalized and summed.

        psi(t) = minmax(|t|) per example (over all non-batch axes, eps 1e-6)
        map = sum_channels psi(x * grad_x) + sum_layers sum_channels up(psi(grad_z * b))

    over the layers with a bias (conv, linear, BatchNorm with its effective bias) whose output
    is spatial like the input; `up` is bilinear upsampling to the input size. The terms
    themselves, complete for ReLU networks, come from `fattr.fullgrad_terms`.

    Differences: the reference implementation upsamples with align_corners=True, fattr with
    False; pytorch-grad-cam normalizes each channel separately, skips linear layers, and
    min-maxes the final map (fattr returns it raw).

    Args:
        f: a model function from `fattr.functional` (or `per_example` of one).
        output: picks a tensor from the model's output.

    Returns `attr(params, x, target=None) -> Tensor` of shape (B, 1, *x.shape[2:]).

    >>> maps = fattr.fullgrad(f)(params, x, target=labels)

    Srinivas, Fleuret, "Full-Gradient Representation for Neural Network Visualization" (2019),
    https://arxiv.org/abs/1905.00780
    """
    model = as_model(f, output, "fullgrad")
    tap = _tap(model, "fullgrad")

    def compute(params: Params, call: Call) -> Tensor:
        x = call.x
        total = x.new_zeros((x.shape[0], 1, *x.shape[2:]))
        for term in full_gradients(model, tap, params, call).values():
            if term.ndim == x.ndim:
                psi = minmax(term.abs(), tuple(range(1, term.ndim)), 1e-6)
                total = total + resize(psi, x.shape[2:], "bilinear", "fullgrad").sum(1, True)
        return total

    empty = lambda call: call.x.new_zeros((0, 1, *call.x.shape[2:]))
    return attribution(model, compute, empty=empty, doc=fullgrad.__doc__)
