"""Quadrature rules on [0, 1] for path integrals: nodes (alphas) and weights.

Nodes and weights follow captum except `riemann_trapezoid`: captum gives every node 1/n and
halves the ends, so its weights sum to (n-1)/n; fattr uses the true trapezoid rule (ends
1/(2(n-1)), inner nodes 1/(n-1)), which integrates constants and linear functions exactly.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from fattr.errors import FattrError


def _riemann(offset: float):
    return lambda n: ((np.arange(n) + offset) / n, np.full(n, 1.0 / n))


def _trapezoid(n: int):
    if n < 2:
        raise FattrError("riemann_trapezoid needs steps >= 2 (it evaluates both ends).")
    weights = np.full(n, 1.0 / (n - 1))
    weights[[0, -1]] /= 2
    return np.linspace(0.0, 1.0, n), weights


def _gauss_legendre(n: int):
    nodes, weights = np.polynomial.legendre.leggauss(n)
    return 0.5 * (1 + nodes), 0.5 * weights


RULES = {
    "riemann_left": _riemann(0.0),
    "riemann_right": _riemann(1.0),
    "riemann_middle": _riemann(0.5),
    "riemann_trapezoid": _trapezoid,
    "gausslegendre": _gauss_legendre,
}


def check_rule(method: str, steps: int, caller: str) -> None:
    """Fail early, in the constructor, on an unknown rule or a bad step count."""
    if method not in RULES:
        raise FattrError(f"{caller}: unknown quadrature method {method!r}; choose one of "
                         f"{', '.join(sorted(RULES))}.")
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
        raise FattrError(f"{caller}: steps must be a positive int, got {steps!r}.")
    if method == "riemann_trapezoid" and steps < 2:
        raise FattrError(f"{caller}: riemann_trapezoid needs steps >= 2, got {steps}.")


@torch.compiler.assume_constant_result
def _nodes(method: str, steps: int) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """The rule's nodes and weights as Python floats: torch.compile takes them as constants
    instead of tracing numpy (it cannot trace `leggauss`)."""
    alphas, weights = RULES[method](steps)
    return tuple(alphas.tolist()), tuple(weights.tolist())


def quadrature(method: str, steps: int, like: Tensor) -> tuple[Tensor, Tensor]:
    """(alphas, weights), each of shape (steps,), in `like`'s dtype and device."""
    check_rule(method, steps, "quadrature")
    alphas, weights = _nodes(method, steps)
    as_tensor = lambda a: torch.as_tensor(a, dtype=like.dtype, device=like.device)
    return as_tensor(alphas), as_tensor(weights)
