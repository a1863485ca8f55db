"""Hand-written AttnLRP rules in Gradient x Input form, for the reference implementations the
transformer tests compare fattr with (independent of fattr's rule code)."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor


class ScaleGrad(torch.autograd.Function):
    """The identity forward, the gradient times `factor` (AttnLRP's uniform rule: 0.5 for a
    product of two inputs, 0.25 / 0.5 for q, k / v)."""

    @staticmethod
    def forward(ctx, x: Tensor, factor: float) -> Tensor:
        ctx.factor = factor
        return x.view_as(x)

    @staticmethod
    def backward(ctx, g: Tensor) -> tuple[Tensor, None]:
        return g * ctx.factor, None


class IdentityRule(torch.autograd.Function):
    """y = act(x), with the gradient y / x * g (AttnLRP's identity rule for an activation)."""

    @staticmethod
    def forward(ctx, x: Tensor, act: Callable[[Tensor], Tensor]) -> Tensor:
        y = act(x)
        ctx.save_for_backward(y / x)
        return y

    @staticmethod
    def backward(ctx, g: Tensor) -> tuple[Tensor, None]:
        return ctx.saved_tensors[0] * g, None
