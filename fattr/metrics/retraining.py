"""ROAR and KAR (Hooker et al. 2019): remove features by rank, retrain, measure test accuracy.

Without retraining, a drop in accuracy after removing pixels may only mean that the model has
never seen such inputs. ROAR removes the top-ranked fraction of every training and test input
(replaced by the per-channel mean), trains a new model from scratch and reports its test
accuracy; KAR removes the bottom-ranked fraction instead. A random ranking is the control.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import NamedTuple

import torch
from torch import Tensor

from fattr.core.checks import check_generator
from fattr.core.chunking import check_batch_size, chunked
from fattr.errors import FattrError, FattrTypeError
from fattr.metrics.base import check_like, ranks

Train = Callable[[Tensor, Tensor], Callable[[Tensor], Tensor]]
Data = tuple[Tensor, Tensor, Tensor, Tensor]


class RetrainingCurve(NamedTuple):
    """Test accuracy of a model retrained at each fraction of removed features."""

    fractions: Tensor  # (F,)
    accuracy: Tensor   # (F,) with the attribution's ranking
    random: Tensor     # (F,) with a random ranking (the control)


def _check(method: str, train: object, data: object, attributions: object,
           fractions: object) -> tuple[Data, tuple[Tensor, Tensor], Tensor]:
    if not callable(train):
        raise FattrTypeError(f"{method}: train must be a function (x_train, y_train) -> model "
                             f"(any callable x -> logits), got {type(train).__name__}.")
    if not (isinstance(data, (tuple, list)) and len(data) == 4
            and all(isinstance(t, Tensor) for t in data)):
        raise FattrTypeError(f"{method}: data must be (x_train, y_train, x_test, y_test) "
                             "tensors, as fattr.data.digits.load_digits() returns.")
    x_train, y_train, x_test, y_test = data
    if x_train.ndim < 2 or x_train.shape[1:] != x_test.shape[1:] or \
            len(y_train) != len(x_train) or len(y_test) != len(x_test):
        raise FattrError(f"{method}: data must hold inputs (N, C, ...) with matching feature "
                         f"shapes and one label per input; got x_train {tuple(x_train.shape)}, "
                         f"y_train {tuple(y_train.shape)}, x_test {tuple(x_test.shape)}, "
                         f"y_test {tuple(y_test.shape)}.")
    if not (isinstance(attributions, (tuple, list)) and len(attributions) == 2):
        raise FattrTypeError(f"{method}: attributions must be a pair (a_train, a_test) shaped like "
                         "x_train and x_test: the ranking of every input, computed with the "
                         "model trained on the unmodified data.")
    a_train = check_like(attributions[0], x_train, method, "a_train", broadcast=True,
                         input_name="x_train")
    a_test = check_like(attributions[1], x_test, method, "a_test", broadcast=True,
                        input_name="x_test")
    values = torch.as_tensor(fractions, dtype=torch.float64)
    if values.ndim != 1 or values.numel() == 0 or bool(((values < 0) | (values > 1)).any()):
        raise FattrError(f"{method}: fractions must be a non-empty sequence of numbers in "
                         f"[0, 1], got {fractions!r}.")
    return (x_train, y_train, x_test, y_test), (a_train, a_test), values


def _remove(x: Tensor, order: Tensor, fraction: float, fill: Tensor, top: bool) -> Tensor:
    """x with the top (or bottom) `fraction` of each example's features, by `order`, set to
    the fill value."""
    features = order[0].numel()
    count = int(fraction * features)
    removed = order < count if top else order >= features - count
    return torch.where(removed.expand(x.shape), fill, x)


def _accuracy(model: Callable[[Tensor], Tensor], x: Tensor, y: Tensor,
              batch_size: int | None) -> Tensor:
    with torch.no_grad():
        logits = chunked(model, x, batch_size=batch_size)
    return (logits.argmax(1) == y.to(logits.device)).double().mean()


def _retraining(method: str, top: bool, train: Train, data: Data,
                attributions: tuple[Tensor, Tensor], fractions: Sequence[float],
                generator: torch.Generator | None, batch_size: int | None) -> RetrainingCurve:
    check_batch_size(batch_size, method)
    check_generator(generator, method)
    (x_train, y_train, x_test, y_test), (a_train, a_test), values = _check(
        method, train, data, attributions, fractions)
    axes = [0, *range(2, x_train.ndim)]
    fill = x_train.mean(axes, keepdim=True)  # per channel (axis 1), over the training set
    orders = {"attribution": (ranks(a_train), ranks(a_test)),
              "random": tuple(ranks(torch.rand(a.shape, generator=generator, device=a.device))
                              for a in (a_train, a_test))}
    curves: dict[str, list[Tensor]] = {name: [] for name in orders}
    for fraction in values.tolist():  # one model trained per fraction and ranking
        for name, (train_order, test_order) in orders.items():
            model = train(_remove(x_train, train_order, fraction, fill, top), y_train)
            x_eval = _remove(x_test, test_order, fraction, fill, top)
            curves[name].append(_accuracy(model, x_eval, y_test, batch_size))
    return RetrainingCurve(values, torch.stack(curves["attribution"]),
                           torch.stack(curves["random"]))


_ARGS = """
    Args:
        train: `train(x_train, y_train) -> model`, a function that trains a NEW model from
            scratch and returns it (any callable x -> logits (N, classes), e.g. an nn.Module
            in eval mode). Called 2 * len(fractions) times.
        data: (x_train, y_train, x_test, y_test), inputs (N, C, ...) and integer labels (as
            `fattr.data.digits.load_digits()` returns).
        attributions: (a_train, a_test) shaped like x_train and x_test (or (N, 1, ...) maps
            that remove all channels of a position): the ranking of every input, computed
            with the model trained on the unmodified data. Ranked by value, largest first
            (pass `.abs()` to rank by magnitude).
        fractions: fractions of each input's features removed (default Hooker et al.'s 0.1,
            0.3, 0.5, 0.7, 0.9; floor(fraction * n) features).
        generator: draws the random ranking of the control.
        batch_size: the most test inputs per forward call when measuring accuracy.

    Removed features take the per-channel mean of the training inputs (axis 1; the mean over
    the examples and all other axes). Each (fraction, ranking) pair trains one model: average
    several calls with differently seeded `train` functions for error bars (Hooker et al. use
    5 runs).

    Returns `RetrainingCurve(fractions (F,), accuracy (F,), random (F,))`: test accuracy with
    the attribution's ranking and with a random ranking.

    Hooker, Erhan, Kindermans, Kim, "A Benchmark for Interpretability Methods in Deep Neural
    Networks" (2019), https://arxiv.org/abs/1806.10758
"""


def roar(train: Train, data: Data, attributions: tuple[Tensor, Tensor],
         fractions: Sequence[float] = (0.1, 0.3, 0.5, 0.7, 0.9), *,
         generator: torch.Generator | None = None,
         batch_size: int | None = None) -> RetrainingCurve:
    """RemOve And Retrain: remove the MOST relevant fraction of every input, retrain, test.

    A good ranking makes accuracy fall faster than the random control (lower is better).
    """
    return _retraining("roar", True, train, data, attributions, fractions, generator,
                       batch_size)


def kar(train: Train, data: Data, attributions: tuple[Tensor, Tensor],
        fractions: Sequence[float] = (0.1, 0.3, 0.5, 0.7, 0.9), *,
        generator: torch.Generator | None = None,
        batch_size: int | None = None) -> RetrainingCurve:
    """Keep And Retrain: remove the LEAST relevant fraction of every input, retrain, test.

    A good ranking keeps accuracy above the random control (higher is better).
    """
    return _retraining("kar", False, train, data, attributions, fractions, generator,
                       batch_size)


roar.__doc__ = (roar.__doc__ or "") + _ARGS
kar.__doc__ = (kar.__doc__ or "") + _ARGS
