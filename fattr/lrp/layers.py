"""Module kinds LRP distinguishes, and layers as functions of their parameters.

`affine(layer)` is a Linear, convolution or transposed convolution as `op(x, weight, bias)`;
`parametrized(module)` is any other leaf module as `op(x, *parameters)` (hook-free, buffers
fixed), so a rule can re-evaluate a layer with modified parameters inside `torch.func.vjp`.
"""

from __future__ import annotations

import copy
import sys
from collections.abc import Callable

import torch.nn.functional as F
from torch import Tensor, nn

from fattr.lrp.relevance import Op

CONVOLUTIONS = (nn.Conv1d, nn.Conv2d, nn.Conv3d)
TRANSPOSED = (nn.ConvTranspose1d, nn.ConvTranspose2d, nn.ConvTranspose3d)
LINEAR_LAYERS = (nn.Linear, *CONVOLUTIONS, *TRANSPOSED)
BATCHNORMS = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)
AVERAGE_POOLS = (nn.AvgPool1d, nn.AvgPool2d, nn.AvgPool3d,
                 nn.AdaptiveAvgPool1d, nn.AdaptiveAvgPool2d, nn.AdaptiveAvgPool3d)
# zennit's `Activation` types without MultiheadAttention (which is no activation), plus Mish
ACTIVATIONS = (nn.ELU, nn.Hardshrink, nn.Hardsigmoid, nn.Hardtanh, nn.Hardswish, nn.LeakyReLU,
               nn.LogSigmoid, nn.PReLU, nn.ReLU, nn.ReLU6, nn.RReLU, nn.SELU, nn.CELU, nn.GELU,
               nn.Sigmoid, nn.SiLU, nn.Mish, nn.Softplus, nn.Softshrink, nn.Softsign, nn.Tanh,
               nn.Tanhshrink, nn.Threshold)
# Modules whose plain gradient already is right for relevance (selections, copies, identity):
# max pooling (winner takes all), dropout in eval mode, reshapes, padding, nearest/linear
# upsampling (each output a convex combination of inputs), permutations, and embedding lookups
# (their input is integer ids; a model called with inputs_embeds does not run them).
PLAIN = (nn.MaxPool1d, nn.MaxPool2d, nn.MaxPool3d, nn.AdaptiveMaxPool1d, nn.AdaptiveMaxPool2d,
         nn.AdaptiveMaxPool3d, nn.Dropout, nn.Dropout1d, nn.Dropout2d, nn.Dropout3d,
         nn.AlphaDropout, nn.FeatureAlphaDropout, nn.Identity, nn.Flatten, nn.Unflatten,
         nn.ZeroPad1d, nn.ZeroPad2d, nn.ZeroPad3d, nn.ConstantPad1d, nn.ConstantPad2d,
         nn.ConstantPad3d, nn.ReflectionPad1d, nn.ReflectionPad2d, nn.ReflectionPad3d,
         nn.ReplicationPad1d, nn.ReplicationPad2d, nn.ReplicationPad3d, nn.CircularPad1d,
         nn.CircularPad2d, nn.CircularPad3d, nn.Upsample, nn.UpsamplingNearest2d,
         nn.UpsamplingBilinear2d, nn.PixelShuffle, nn.PixelUnshuffle, nn.ChannelShuffle,
         nn.Embedding)

_TRANSPOSED_OPS = {nn.ConvTranspose1d: F.conv_transpose1d, nn.ConvTranspose2d: F.conv_transpose2d,
                   nn.ConvTranspose3d: F.conv_transpose3d}


def affine(layer: nn.Module) -> Op:
    """A Linear, Conv or ConvTranspose layer as `op(x, weight, bias=None)`."""
    if isinstance(layer, nn.Linear):
        return F.linear
    if isinstance(layer, CONVOLUTIONS):
        return lambda x, weight, bias=None: layer._conv_forward(x, weight, bias)
    conv = next(op for kind, op in _TRANSPOSED_OPS.items() if isinstance(layer, kind))

    def transposed(x: Tensor, weight: Tensor, bias: Tensor | None = None) -> Tensor:
        return conv(x, weight, bias, layer.stride, layer.padding, layer.output_padding,
                    layer.groups, layer.dilation)

    return transposed


def parametrized(module: nn.Module, buffers: dict[str, Tensor], names: tuple[str, ...],
                 forward: Callable[..., Tensor] | None = None) -> Op:
    """Any leaf module as `op(x, *parameters)` with the given buffers, without its hooks
    (`forward`: another class's forward to run, such as a BatchNorm subclass's base class's)."""
    forward = type(module).forward if forward is None else forward

    def op(x: Tensor, *tensors: Tensor) -> Tensor:
        view = copy.copy(module)
        view.__dict__["_parameters"] = dict(zip(names, tensors))
        view.__dict__["_buffers"] = dict(buffers)
        return forward(view, x)

    return op


# modules of these packages that are elementwise activations (when the package is imported)
_ACTIVATION_PACKAGES = ("transformers.activations", "timm.layers.activations",
                        "timm.layers.activations_me")


def activation_types() -> tuple[type, ...]:
    """`ACTIVATIONS` plus the elementwise activation modules that transformers and timm define
    (GELUActivation, NewGELUActivation, timm's GELU, Swish, ...), for the packages already
    imported: a model holding one has imported its package."""
    found = [cls for package in _ACTIVATION_PACKAGES if (mod := sys.modules.get(package))
             for cls in vars(mod).values()
             if isinstance(cls, type) and issubclass(cls, nn.Module) and cls.__module__ == package]
    return (*ACTIVATIONS, *found)


def plain_types() -> tuple[type, ...]:
    """`PLAIN` plus timm's DropPath (the identity in eval mode) when timm is imported."""
    drop = sys.modules.get("timm.layers.drop")
    return PLAIN if drop is None else (*PLAIN, drop.DropPath)


def normalization_like(module: nn.Module) -> bool:
    """A normalization module written out in torch ops (HuggingFace's LlamaRMSNorm,
    Gemma3RMSNorm, Qwen3RMSNorm, T5LayerNorm, torch's RMSNorm...): a leaf whose class name ends
    in RMSNorm or LayerNorm and that is no nn.LayerNorm (whose F.layer_norm has its own route)."""
    name = type(module).__name__.lower()
    return not module._modules and not isinstance(module, nn.LayerNorm) and \
        name.endswith(("rmsnorm", "layernorm"))


def sigmoid_like(module: nn.Module) -> bool:
    """A sigmoid-like activation module (torch's, timm's Sigmoid and HardSigmoid...): its output
    in (0, 1) gates the tensor it multiplies."""
    return isinstance(module, (nn.Sigmoid, nn.Hardsigmoid)) or \
        "sigmoid" in type(module).__name__.lower()
