"""Straight-line paths between a baseline and the input, the shape shared by IG and friends."""

from __future__ import annotations

import torch
from torch import Tensor


def expand_axis(v: Tensor, ndim: int) -> Tensor:
    """View a (S,) or (S, B) vector with trailing unit axes up to `ndim` axes."""
    return v.reshape(*v.shape, *([1] * (ndim - v.ndim)))


def straight_path(start: Tensor, end: Tensor, alphas: Tensor) -> Tensor:
    """Points start + alpha * (end - start), shape (S, B, ...) for `start`, `end` of shape
    (B, ...) and `alphas` of shape (S,) or (S, B)."""
    return start + expand_axis(alphas, 1 + end.ndim) * (end - start)


def random_paths(x: Tensor, pool: Tensor, samples: int, stdev: float,
                 generator: torch.Generator | None) -> tuple[Tensor, Tensor, Tensor]:
    """GradientSHAP's draws, all at once from `generator`: for each of `samples` draws and
    each example, a baseline from `pool` (N, ...), Gaussian noise N(0, stdev^2) on x and
    alpha ~ U(0, 1). Returns (start, end, point), each (S, B, ...): the baseline, the noisy
    input and the point start + alpha (end - start)."""
    draw = dict(generator=generator, device=x.device)
    pick = torch.randint(pool.shape[0], (samples, x.shape[0]), **draw)
    noise = torch.randn((samples, *x.shape), dtype=x.dtype, **draw) * stdev
    alphas = torch.rand((samples, x.shape[0]), dtype=x.dtype, **draw)
    start, end = pool[pick], x + noise
    return start, end, start + expand_axis(alphas, end.ndim) * (end - start)
