"""Self-influence: TracIn of each example on itself, a score for mislabelled or rare examples."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

import torch
from torch import Tensor

from fattr.core.checks import check_eval_mode
from fattr.core.model import ModelFn
from fattr.errors import FattrError
from fattr.influence.data import Data, check_rows, chunks
from fattr.influence.features import TracInFeatures
from fattr.influence.gradients import Loss
from fattr.layers.taps import LayerSpec


def self_influence(f: ModelFn, checkpoints: Sequence[Mapping[str, Tensor]], loss: Loss, *,
                   learning_rates: float | Sequence[float] | Tensor | None = None,
                   layers: LayerSpec | Sequence[LayerSpec] | None = None,
                   last_layer: LayerSpec | None = None, projection_dim: int | None = None,
                   batch_size: int | None = None, generator: torch.Generator | None = None,
                   ) -> Callable[..., Tensor]:
    """TracIn of each example on itself: sum_c lr_c |grad_w L(w_c, z)|^2.

    Large values flag examples the model found hard: mislabelled, ambiguous or rare ones.
    The arguments are those of `fattr.influence.tracin` (same checkpoints, learning rates,
    layers, `last_layer` for TracInCPFast, projection and `batch_size`).

    Returns `scores(x, y) -> Tensor (n,)`; `x` may be a DataLoader of (x, y) with y None.

    >>> si = fattr.influence.self_influence(f, ckpts, nn.CrossEntropyLoss(reduction="sum"))
    >>> suspicious = si(x_train, y_train).topk(10).indices

    Pruthi et al., "Estimating Training Data Influence by Tracing Gradient Descent" (2020),
    https://arxiv.org/abs/2002.08484 (section 4.1, self-influence).
    """
    features = TracInFeatures(f, checkpoints, loss, learning_rates=learning_rates, layers=layers,
                              last_layer=last_layer, projection_dim=projection_dim,
                              batch_size=batch_size, generator=generator,
                              method="self_influence")

    def scores(x: Data, y: Tensor | None = None) -> Tensor:
        check_rows(x, y, "x", "self_influence")
        check_eval_mode(features.model.module, "self_influence")
        parts = [features.self_influence(bx, by)
                 for bx, by in chunks(x, y, features.batch_size, "self_influence")]
        if not parts:
            raise FattrError("self_influence: no rows to score (empty data).")
        return torch.cat(parts)

    scores.__doc__ = self_influence.__doc__
    return scores
