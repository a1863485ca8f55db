"""TCAV: the share of a class's examples whose score rises along a concept's direction."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor

from fattr.concepts.directional_derivatives import CAVs, directional_derivatives
from fattr.core.chunking import check_batch_size, row_slices
from fattr.core.model import ModelFn, Params
from fattr.core.targets import TargetSpec
from fattr.errors import FattrError
from fattr.layers.taps import LayerSpec


def tcav(f: ModelFn, layer: LayerSpec, cavs: CAVs, *, batch_size: int | None = None,
         output: Callable[[Any], Tensor] | None = None) -> Callable[..., Tensor]:
    """TCAV_k = |{x : S_k(x) > 0}| / |X|, with S_k(x) the derivative of the target score
    along CAV k at `layer` (`fattr.concepts.directional_derivatives`).

    Args:
        f: a model function from `fattr.functional`.
        layer: the layer the CAVs were trained at (any layer; dotted name or submodule).
        cavs: a `CAV`, a list of them, or a tensor of vectors (K, D) or (D,).
        batch_size: the most examples per forward and backward pass (default all).
        output: picks a tensor from the model's output.

    Returns `scores(params, x, target=None) -> Tensor (K,)`: one TCAV score per CAV, in
    [0, 1], over the examples x (usually those of the target class).

    >>> c = fattr.concepts.cav(f, params, "layer3", stripes, randoms)
    >>> fattr.concepts.tcav(f, "layer3", [c])(params, zebras, target=zebra)   # tensor([0.93])

    captum's TCAV `sign_count` is the same number for the same CAV (its layer attribution is
    LayerGradientXActivation with multiply_by_inputs=False, the layer gradient).

    Kim et al., TCAV (ICML 2018), https://arxiv.org/abs/1711.11279
    """
    batch_size = check_batch_size(batch_size, "tcav")
    derivatives = directional_derivatives(f, layer, cavs, output=output)

    def scores(params: Params, x: Tensor, target: TargetSpec = None) -> Tensor:
        if not isinstance(x, Tensor) or x.ndim == 0 or x.shape[0] == 0:
            raise FattrError("tcav: x must hold at least one example (a batch axis first).")
        if isinstance(target, list):
            target = torch.as_tensor(target, device=x.device)
        positive = [(derivatives(params, x[s], target[s] if isinstance(target, Tensor)
                                 else target) > 0).sum(0)
                    for s in row_slices(x.shape[0], batch_size)]
        return sum(positive) / x.shape[0]

    scores.__doc__ = tcav.__doc__
    return scores
