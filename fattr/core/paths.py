"""Straight-line paths between a baseline and the input, the shape shared by IG and friends."""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import Tensor

from fattr.core.inputs import Inputs


def expand_axis(v: Tensor, ndim: int) -> Tensor:
    """View a (S,) or (S, B) vector with trailing unit axes up to `ndim` axes."""
    return v.reshape(*v.shape, *([1] * (ndim - v.ndim)))


def straight_path(start: Tensor, end: Tensor, alphas: Tensor) -> Tensor:
    """Points start + alpha * (end - start), shape (S, B, ...) for `start`, `end` of shape
    (B, ...) and `alphas` of shape (S,) or (S, B)."""
    return start + expand_axis(alphas, 1 + end.ndim) * (end - start)


def line_points(starts: Inputs, ends: Inputs, alphas: Tensor, example: Tensor) -> Inputs:
    """Rows start + alpha (end - start) of every input, for rows of examples `example` with one
    alpha each (N,): the points of a straight-line path, built per chunk."""
    return tuple(s[example] + expand_axis(alphas, e.ndim) * (e[example] - s[example])
                 for s, e in zip(starts, ends))


class RandomPaths(NamedTuple):
    """GradientSHAP's draws for S samples of B examples: a reference index `pick` (S, B) into
    the distributions, Gaussian `noise` per input (S, B, ...), and `alphas` (S, B)."""

    pick: Tensor
    noise: Inputs
    alphas: Tensor

    def rows(self, pools: Inputs, xs: Inputs, step: Tensor, example: Tensor,
             ) -> tuple[Inputs, Inputs, Inputs]:
        """(starts, ends, points) of each input for the rows (step, example): the reference,
        the noisy input and the point start + alpha (end - start)."""
        pick, alphas = self.pick[step, example], self.alphas[step, example]
        starts = tuple(pool[pick] for pool in pools)
        ends = tuple(x[example] + noise[step, example] for x, noise in zip(xs, self.noise))
        points = tuple(s + expand_axis(alphas, e.ndim) * (e - s) for s, e in zip(starts, ends))
        return starts, ends, points


def random_paths(xs: Inputs, references: int, samples: int, stdev: float,
                 generator: torch.Generator | None) -> RandomPaths:
    """All of GradientSHAP's random draws at once from `generator` (so nothing depends on
    `batch_size`): for each of `samples` draws and each example, one of `references`
    references, noise N(0, stdev^2) on each input and alpha ~ U(0, 1)."""
    x = xs[0]
    draw = dict(generator=generator, device=x.device)
    pick = torch.randint(references, (samples, x.shape[0]), **draw)
    noise = tuple(torch.randn((samples, *t.shape), dtype=t.dtype, **draw) * stdev for t in xs)
    alphas = torch.rand((samples, x.shape[0]), dtype=x.dtype, **draw)
    return RandomPaths(pick, noise, alphas)
