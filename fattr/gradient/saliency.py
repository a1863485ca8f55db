"""Saliency: the input gradient of the target score (Simonyan et al. 2014)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from torch import Tensor

from fattr.core.call import Call, attribution
from fattr.core.gradients import input_gradient
from fattr.core.model import ModelFn, Params, as_model
from fattr.errors import FattrTypeError


def saliency(f: ModelFn, abs: bool = True, *, output: Callable[[Any], Tensor] | None = None,
             ) -> Callable[..., Tensor]:
    """Gradient of the target score with respect to the input: `|d y_t / d x|`.

    Args:
        f: model function `f(params, x)`.
        abs: return the absolute gradient (captum's default, True) or the signed one.
        output: picks a tensor from the model's output (tuple, dict, HuggingFace ModelOutput).

    Returns `attr(params, x, target=None) -> Tensor` shaped like x.

    >>> attr = fattr.saliency(f)
    >>> attr(params, x, target=3).shape == x.shape

    Simonyan, Vedaldi, Zisserman, "Deep Inside Convolutional Networks" (2014),
    https://arxiv.org/abs/1312.6034
    """
    model = as_model(f, output, "saliency")

    if not isinstance(abs, bool):
        raise FattrTypeError(f"saliency: abs must be True or False, got {abs!r}.")

    def compute(params: Params, call: Call) -> Tensor:
        gradients, _ = input_gradient(model, params, call.inputs, call)
        return call.unpack(tuple(g.abs() if abs else g for g in gradients))

    return attribution(model, compute, doc=saliency.__doc__)
