"""The most influential training examples of each test example."""

from __future__ import annotations

from torch import Tensor

from fattr.errors import FattrError


def top_k(scores: Tensor, k: int, proponents: bool = True) -> tuple[Tensor, Tensor]:
    """The k proponents (highest influence) or opponents (lowest) of each test example.

    Args:
        scores: (n_test, n_train) influence scores, as `tracin` returns.
        k: how many training examples per test example (at most n_train).
        proponents: True for the highest scores (in descending order), False for the lowest
            (the opponents, in ascending order), as captum's `influence(k=..., proponents=...)`.

    Returns `(values, indices)`, each (n_test, k); `indices` are training-row numbers.

    >>> values, rows = fattr.influence.top_k(scores, 3)
    >>> x_train[rows[0]]   # the three strongest proponents of test example 0
    """
    if not isinstance(scores, Tensor) or scores.ndim != 2:
        shape = tuple(scores.shape) if isinstance(scores, Tensor) else type(scores).__name__
        raise FattrError(f"top_k: scores must be an (n_test, n_train) tensor, got {shape}.")
    if isinstance(k, bool) or not isinstance(k, int) or not 1 <= k <= scores.shape[1]:
        raise FattrError(f"top_k: k must be an int from 1 to the number of training examples "
                         f"({scores.shape[1]}), got {k!r}.")
    values, indices = scores.topk(k, dim=1, largest=proponents, sorted=True)
    return values, indices
