"""PGD: projected gradient descent on the input, in an Linf or L2 ball (Madry et al. 2018)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from fattr.core.checks import check_count
from fattr.core.model import ModelFn, Params
from fattr.errors import FattrError
from fattr.robust.objective import (
    Bounds,
    Loss,
    Objective,
    Size,
    check_size,
    one_example_at_a_time,
    per_example,
    signed,
)

NORMS = ("Linf", "L2")


def pgd(f: ModelFn, radius: Size, step_size: Size, steps: int, *, norm: str = "Linf",
        loss: Loss | None = None, targeted: bool = False, random_start: bool = False,
        bounds: Bounds = None, zero_threshold: float = 0.0,
        output: Callable[[Any], Tensor] | None = None) -> Callable[..., Tensor]:
    """Projected gradient descent: `steps` gradient steps, each projected back onto the ball
    of `radius` around x and clamped to `bounds`,

        Linf:  x_{k+1} = P(x_k + s * step_size * sign(g_k))
        L2:    x_{k+1} = P(x_k + s * step_size * g_k / |g_k|_2)

    with g_k = grad_x L(f(x_k), target) (times `mask`), s = +1, or -1 when `targeted`; P
    clips x_{k+1} - x to [-radius, radius] (Linf) or rescales it to norm <= radius (L2),
    then clamps to `bounds`.

    Args:
        f: model function `f(params, x)`.
        radius, step_size: numbers, or tensors with one value per example (B,).
        steps: number of steps (>= 0).
        norm: "Linf" (default) or "L2".
        loss: `loss(out, target)` -> per-example losses (B,); default cross-entropy on logits.
        targeted: move towards `target`.
        random_start: start from a uniform point of the ball (Linf: uniform per element; L2:
            uniform in the ball, captum's construction), drawn from the call's `generator`.
        bounds: `(low, high)` clamp, e.g. `(0.0, 1.0)`.
        zero_threshold: Linf steps leave elements with |gradient| <= this (default 0.0;
            captum uses 1e-6).

    Returns `attack(params, x, target, generator=None, *, mask=None) -> Tensor` shaped like x.
    The steps are not detached: the result is differentiable in x, and the L2 steps (whose
    direction g/|g| depends on the parameters) in the parameters as well.

    >>> adv = fattr.robust.pgd(f, 0.1, 0.02, 10, bounds=(0.0, 1.0))(params, x, labels)

    Differs from captum: captum's default loss is -log(out) (pass cross-entropy to compare);
    its Linf steps skip elements with |gradient| <= 1e-6 (`zero_threshold=1e-6` here); its
    "L2" PGD takes signed (Linf) steps and only projects onto the L2 ball (with torch.renorm,
    which divides by |d| + 1e-7), and its L2 random start fails for inputs whose last axis is
    not the batch size (captum 0.9); fattr's L2 steps follow the normalized gradient, as in
    Madry et al.

    Madry, Makelov, Schmidt, Tsipras, Vladu, "Towards Deep Learning Models Resistant to
    Adversarial Attacks" (ICLR 2018), https://arxiv.org/abs/1706.06083
    """
    radius = check_size(radius, "radius", "pgd")
    step_size = check_size(step_size, "step_size", "pgd")
    steps = check_count(steps, "steps", "pgd", minimum=0)
    zero_threshold = check_size(zero_threshold, "zero_threshold", "pgd")
    if norm not in NORMS:
        raise FattrError(f"pgd: norm must be one of {NORMS}, got {norm!r}.")
    if not isinstance(random_start, bool):
        raise FattrError(f"pgd: random_start must be True or False, got {random_start!r}.")
    objective = Objective(f, loss, targeted, bounds, "pgd", output)

    def attack(params: Params, x: Tensor, target: Any = None,
               generator: torch.Generator | None = None, *,
               mask: Tensor | None = None) -> Tensor:
        label = objective.check(x, target, mask)
        r = per_example(radius, x, "radius", "pgd")
        alpha = per_example(step_size, x, "step_size", "pgd")
        adv = x
        if random_start:
            start = _random_point(x, r, norm, generator)
            adv = objective.bound(x + (start if mask is None else start * mask))
        for _ in range(steps):
            g = objective.gradient(params, adv, label)
            if mask is not None:
                g = g * mask
            step = signed(g, zero_threshold) if norm == "Linf" else _unit(g)
            adv = objective.bound(x + _project(adv + objective.sign * alpha * step - x, r, norm))
        return adv

    attack.__doc__ = pgd.__doc__
    return one_example_at_a_time(objective, attack)


def _unit(g: Tensor) -> Tensor:
    """g / |g|_2 per example (zero where g is zero)."""
    norms = g.flatten(1).norm(dim=1).reshape(-1, *([1] * (g.ndim - 1)))
    return g / torch.where(norms > 0, norms, torch.ones_like(norms))


def _project(delta: Tensor, radius: Size, norm: str) -> Tensor:
    if norm == "Linf":
        return torch.clamp(delta, -radius, radius)
    norms = delta.flatten(1).norm(dim=1).reshape(-1, *([1] * (delta.ndim - 1)))
    scale = torch.where(norms > radius, radius / torch.where(norms > 0, norms, 1.0), 1.0)
    return delta * scale


def _random_point(x: Tensor, radius: Size, norm: str, generator: torch.Generator | None,
                  ) -> Tensor:
    """A uniform draw from the ball of `radius` (captum's construction and order of draws)."""
    if norm == "Linf":
        u = torch.rand(x.shape, generator=generator, dtype=x.dtype, device=x.device)
        return u * radius * 2 - radius
    u = torch.randn(x.shape, generator=generator, dtype=x.dtype, device=x.device)
    unit = F.normalize(u.reshape(x.shape[0], -1)).reshape(x.shape)
    dims = x[0].numel()
    r = torch.rand(x.shape[0], generator=generator, device=x.device) ** (1.0 / dims)
    return r.to(x.dtype).reshape(-1, *([1] * (x.ndim - 1))) * radius * unit
