"""Straight-line paths between a baseline and the input, the shape shared by IG and friends."""

from __future__ import annotations

from torch import Tensor


def expand_axis(v: Tensor, ndim: int) -> Tensor:
    """View a (S,) or (S, B) vector with trailing unit axes up to `ndim` axes."""
    return v.reshape(*v.shape, *([1] * (ndim - v.ndim)))


def straight_path(start: Tensor, end: Tensor, alphas: Tensor) -> Tensor:
    """Points start + alpha * (end - start), shape (S, B, ...) for `start`, `end` of shape
    (B, ...) and `alphas` of shape (S,) or (S, B)."""
    return start + expand_axis(alphas, 1 + end.ndim) * (end - start)
