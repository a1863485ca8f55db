"""Conceptual sensitivity: the derivative of the target score along each CAV at a layer."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, Union

import torch
from torch import Tensor

from fattr.concepts.cav import CAV
from fattr.core.call import Call, attribution
from fattr.core.model import ModelFn, Params, as_model
from fattr.errors import FattrError, FattrTypeError
from fattr.layers.taps import LayerSpec, Tap

CAVs = Union[CAV, Sequence[CAV], Tensor]


def directional_derivatives(f: ModelFn, layer: LayerSpec, cavs: CAVs, *,
                            output: Callable[[Any], Tensor] | None = None,
                            ) -> Callable[..., Tensor]:
    """S_k(x) = grad_h score(x) . v_k: the target score's derivative along each CAV v_k at
    `layer` (h is the flattened layer output).

    Args:
        f: a model function from `fattr.functional`.
        layer: the layer the CAVs live in (dotted name or submodule).
        cavs: a `CAV`, a list of them, or a tensor of vectors (K, D) or (D,).
        output: picks a tensor from the model's output.

    Returns `attr(params, x, target=None) -> Tensor (B, K)`, differentiable in params and x.

    >>> s = fattr.concepts.directional_derivatives(f, "layer3", [c])(params, x, target=3)

    Kim et al., TCAV (ICML 2018), https://arxiv.org/abs/1711.11279 (eq. 1).
    """
    model = as_model(f, output, "directional_derivatives")
    tap = Tap(model, layer, "directional_derivatives")
    vectors = cav_matrix(cavs, tap.names[0], "directional_derivatives")

    def compute(params: Params, call: Call) -> Tensor:
        gradient = tap.one(tap.gradients(params, call, call.inputs).gradients).flatten(1)
        if gradient.shape[1] != vectors.shape[1]:
            raise FattrError(f"directional_derivatives: the CAVs have {vectors.shape[1]} "
                             f"entries but layer {tap.names[0]!r} has {gradient.shape[1]} "
                             "outputs per example; train the CAVs at this layer.")
        return gradient @ vectors.to(gradient).T

    def empty(call: Call) -> Tensor:
        return call.first.new_zeros(0, vectors.shape[0])

    return attribution(model, compute, empty=empty, doc=directional_derivatives.__doc__)


def cav_matrix(cavs: CAVs, layer: str, method: str) -> Tensor:
    """(K, D) CAV vectors; CAVs trained at another layer raise."""
    if isinstance(cavs, Tensor):
        if cavs.ndim not in (1, 2) or not cavs.is_floating_point():
            raise FattrError(f"{method}: CAV vectors must be a float tensor (K, D) or (D,), "
                             f"got {cavs.dtype} of shape {tuple(cavs.shape)}.")
        return cavs.reshape(-1, cavs.shape[-1])
    items = [cavs] if isinstance(cavs, CAV) else list(cavs) \
        if isinstance(cavs, Sequence) and not isinstance(cavs, str) else None
    if not items or not all(isinstance(c, CAV) for c in items):
        raise FattrTypeError(f"{method}: cavs must be a CAV, a non-empty list of CAVs (from "
                             "fattr.concepts.cav) or a tensor of vectors, got "
                             f"{type(cavs).__name__}.")
    for c in items:
        if c.layer != layer:
            raise FattrError(f"{method}: a CAV was trained at layer {c.layer!r}, but this method "
                             f"taps {layer!r}. Use the layer the CAV was trained at.")
    return torch.stack([c.vector for c in items])
