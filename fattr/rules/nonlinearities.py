"""The activations rules know: module types, functional forms, and how to rebuild each one.

Each activation is rebuilt as a function of x alone (`functools.partial` of a torch function
holding its configuration), from a module or from the arguments of a functional call. The call
forms are the functions a `TorchFunctionMode` sees: `F.sigmoid` arrives as `Tensor.sigmoid`,
`nn.ReLU` as `F.relu`, `F.relu_` as `torch.relu_`.
"""

from __future__ import annotations

from functools import partial
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from fattr.rules.activation import Activation, ActivationFn, Unsupported


def _inplace_kw(make: Any) -> Any:
    """A parser for forms `f(x, *config, inplace=False)`."""
    def parse(*args: Any, inplace: bool = False, **kwargs: Any) -> tuple[ActivationFn, bool]:
        return make(*args, **kwargs), inplace
    return parse


def _always_inplace(make: Any) -> Any:
    return lambda *args, **kwargs: (make(*args, **kwargs), True)


def _never_inplace(make: Any) -> Any:
    return lambda *args, **kwargs: (make(*args, **kwargs), False)


def _relu(*_: Any) -> ActivationFn:
    return torch.relu


RELU = Activation("ReLU", (nn.ReLU,), lambda m: torch.relu, {
    F.relu: _inplace_kw(_relu), torch.relu: _never_inplace(_relu),
    Tensor.relu: _never_inplace(_relu), torch.relu_: _always_inplace(_relu),
    Tensor.relu_: _always_inplace(_relu)},
    slope=lambda x, y, fn: y.sign())  # 1 where x > 0, else 0


def _leaky(negative_slope: float = 0.01) -> ActivationFn:
    return partial(F.leaky_relu, negative_slope=negative_slope)


def _where_positive(x: Tensor, positive: Any, other: Any) -> Tensor:
    return torch.where(x > 0, positive, other).to(x.dtype)


LEAKY_RELU = Activation("LeakyReLU", (nn.LeakyReLU,), lambda m: _leaky(m.negative_slope), {
    F.leaky_relu: _inplace_kw(_leaky), F.leaky_relu_: _always_inplace(_leaky)},
    slope=lambda x, y, fn: _where_positive(x, 1.0, fn.keywords["negative_slope"]))


def _elu(alpha: float = 1.0) -> ActivationFn:
    return partial(F.elu, alpha=alpha)


ELU = Activation("ELU", (nn.ELU,), lambda m: _elu(m.alpha), {
    F.elu: _inplace_kw(_elu), F.elu_: _always_inplace(_elu)},
    slope=lambda x, y, fn: _where_positive(x, 1.0, fn.keywords["alpha"] * x.exp()))


def _fixed(fn: ActivationFn) -> Any:
    return lambda *_: fn


SIGMOID = Activation("Sigmoid", (nn.Sigmoid,), lambda m: torch.sigmoid, {
    torch.sigmoid: _never_inplace(_fixed(torch.sigmoid)),
    Tensor.sigmoid: _never_inplace(_fixed(torch.sigmoid)),
    torch.sigmoid_: _always_inplace(_fixed(torch.sigmoid)),
    Tensor.sigmoid_: _always_inplace(_fixed(torch.sigmoid))},
    slope=lambda x, y, fn: y * (1 - y))

TANH = Activation("Tanh", (nn.Tanh,), lambda m: torch.tanh, {
    torch.tanh: _never_inplace(_fixed(torch.tanh)),
    Tensor.tanh: _never_inplace(_fixed(torch.tanh)),
    torch.tanh_: _always_inplace(_fixed(torch.tanh)),
    Tensor.tanh_: _always_inplace(_fixed(torch.tanh))},
    slope=lambda x, y, fn: 1 - y * y)


def _softplus(beta: float = 1.0, threshold: float = 20.0) -> ActivationFn:
    return partial(F.softplus, beta=beta, threshold=threshold)


def _softplus_slope(x: Tensor, y: Tensor, fn: ActivationFn) -> Tensor:
    scaled = x * fn.keywords["beta"]
    return torch.where(scaled > fn.keywords["threshold"], 1.0, torch.sigmoid(scaled)).to(x.dtype)


SOFTPLUS = Activation("Softplus", (nn.Softplus,), lambda m: _softplus(m.beta, m.threshold), {
    F.softplus: _never_inplace(_softplus)}, slope=_softplus_slope)


def _gelu(approximate: str = "none") -> ActivationFn:
    return partial(F.gelu, approximate=approximate)


GELU = Activation("GELU", (nn.GELU,), lambda m: _gelu(m.approximate), {
    F.gelu: _never_inplace(_gelu)})

SILU = Activation("SiLU", (nn.SiLU,), lambda m: F.silu, {F.silu: _inplace_kw(_fixed(F.silu))})


def _softmax(dim: int | None = None, _stacklevel: int = 3, dtype: Any = None) -> ActivationFn:
    if dim is None:
        raise Unsupported("softmax without an explicit dim picks its axis implicitly (for 1-D "
                          "and 3-D inputs the batch axis); pass dim=... to the softmax.")
    return partial(torch.softmax, dim=dim, dtype=dtype)


def _softmax_torch(dim: int, dtype: Any = None) -> ActivationFn:
    return _softmax(dim, dtype=dtype)


SOFTMAX = Activation("Softmax", (nn.Softmax,), lambda m: _softmax(m.dim), {
    F.softmax: _never_inplace(_softmax), torch.softmax: _never_inplace(_softmax_torch),
    Tensor.softmax: _never_inplace(_softmax_torch)})


def _max_pool(pool: Any) -> Any:
    def make(kernel_size: Any, stride: Any = None, padding: Any = 0, dilation: Any = 1,
             ceil_mode: bool = False, return_indices: bool = False) -> ActivationFn:
        if return_indices:
            raise Unsupported("max pooling that returns its indices; use return_indices=False.")
        return partial(pool, kernel_size=kernel_size, stride=stride or kernel_size,
                       padding=padding, dilation=dilation, ceil_mode=ceil_mode)
    return make


def _max_pool_module(pool: Any) -> Any:
    return lambda m: _max_pool(pool)(m.kernel_size, m.stride, m.padding, m.dilation,
                                     m.ceil_mode, m.return_indices)


MAX_POOLS = tuple(
    Activation(f"MaxPool{d}d", (module,), _max_pool_module(fn), {
        fn: _never_inplace(_max_pool(fn)), builtin: _never_inplace(_max_pool(fn))})
    for d, module, fn, builtin in (
        (1, nn.MaxPool1d, F.max_pool1d, torch.max_pool1d),
        (2, nn.MaxPool2d, F.max_pool2d, torch.max_pool2d),
        (3, nn.MaxPool3d, F.max_pool3d, torch.max_pool3d)))
