"""TracIn (TracInCP, TracInCPFast and their random projections): training-data influence."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

import torch
from torch import Tensor

from fattr.core.model import ModelFn
from fattr.influence.data import Data, check_rows, chunks
from fattr.influence.features import TracInFeatures
from fattr.influence.gradients import Loss
from fattr.layers.taps import LayerSpec


def tracin(f: ModelFn, checkpoints: Sequence[Mapping[str, Tensor]], loss: Loss, *,
           learning_rates: float | Sequence[float] | Tensor | None = None,
           layers: LayerSpec | Sequence[LayerSpec] | None = None,
           last_layer: LayerSpec | None = None, projection_dim: int | None = None,
           batch_size: int | None = None, generator: torch.Generator | None = None,
           ) -> Callable[..., Tensor]:
    """TracInCP: the influence of every training example on every test example,

        TracIn(z, z') = sum_c lr_c <grad_w L(w_c, z'), grad_w L(w_c, z)>,

    summed over the saved checkpoints w_c with their learning rates lr_c (Pruthi et al.).

    Args:
        f: model function `f(params, x)` (from `fattr.functional`).
        checkpoints: a list of params dicts, one per saved checkpoint (clone the tensors when
            saving: `{k: v.clone() for k, v in fattr.functional(model)[1].items()}`).
        loss: `loss(out, y)` summed over the batch (e.g. `nn.CrossEntropyLoss(reduction="sum")`).
        learning_rates: one number per checkpoint, or one for all; default 1.0 (captum's).
        layers: differentiate only the parameters of these layers (dotted names or modules);
            default every trainable parameter (buffers never).
        last_layer: TracInCPFast: only the weight of this `nn.Linear`, whose per-example
            gradient d a^T is used in factored form, <d a^T, d' a'^T> = (d.d')(a.a'); d is the
            loss gradient at the layer's output, a its input. Excludes `layers`.
        projection_dim: random Gaussian projection of the gradients to this many dimensions
            (entries N(0, 1/k), inner products kept in expectation; TracInCPFastRandProj with
            `last_layer`, where d and a each go to int(sqrt(projection_dim))). Drawn once, here,
            from `generator` (the global RNG when None).
        batch_size: the most rows whose per-example gradients are held at once (default all).

    Returns `scores(train_x, train_y, test_x, test_y) -> Tensor (n_test, n_train)`.
    `train_x` (and `test_x`) may be a DataLoader of (x, y) batches, with its `_y` None.
    Per-example gradients come from `torch.func.vmap(torch.func.grad(...))`, `batch_size`
    training rows at a time, all checkpoints per chunk; the test gradients are kept in memory.

    >>> ckpts = [{k: v.clone() for k, v in params.items()} for params in saved]
    >>> tr = fattr.influence.tracin(f, ckpts, nn.CrossEntropyLoss(reduction="sum"))
    >>> scores = tr(x_train, y_train, x_test, y_test)         # (n_test, n_train)
    >>> values, rows = fattr.influence.top_k(scores, 5)

    Differences from captum: checkpoints are params dicts, not files and a loader; captum's
    TracInCP differentiates only Linear and Conv2d layers with sample_wise_grads_per_batch=True,
    fattr every trainable parameter.

    Pruthi, Liu, Kale, Sundararajan, "Estimating Training Data Influence by Tracing Gradient
    Descent" (NeurIPS 2020), https://arxiv.org/abs/2002.08484
    """
    features = TracInFeatures(f, checkpoints, loss, learning_rates=learning_rates, layers=layers,
                              last_layer=last_layer, projection_dim=projection_dim,
                              batch_size=batch_size, generator=generator, method="tracin")

    def scores(train_x: Data, train_y: Tensor | None, test_x: Data, test_y: Tensor | None,
               ) -> Tensor:
        check_rows(train_x, train_y, "train_x", "tracin")
        check_rows(test_x, test_y, "test_x", "tracin")
        test = features.all_rows(test_x, test_y)
        parts = [features.influence(test, bx, by)
                 for bx, by in chunks(train_x, train_y, features.batch_size, "tracin")]
        first = test[0][0][0]
        return torch.cat(parts, dim=1) if parts else first.new_zeros(first.shape[0], 0)

    scores.__doc__ = tracin.__doc__
    return scores
