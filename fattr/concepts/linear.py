"""Linear classifiers in torch that separate concept activations (label 1) from random ones (0).

Each returns (w, b) in the space of its inputs, so that w.x + b > 0 predicts the concept.
Features are centered and divided by one overall scale before fitting (a scalar, so the
direction in the original space is unchanged) and the solution is mapped back.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

Fit = Callable[[Tensor, Tensor], tuple[Tensor, Tensor]]


def _standardized(fit: Callable[[Tensor, Tensor], tuple[Tensor, Tensor]]) -> Fit:
    def wrapped(x: Tensor, labels: Tensor) -> tuple[Tensor, Tensor]:
        mean = x.mean(0)
        scale = (x - mean).pow(2).mean().sqrt().clamp_min(torch.finfo(x.dtype).tiny)
        w, b = fit((x - mean) / scale, labels)
        w = w / scale
        return w, b - mean @ w
    return wrapped


@_standardized
def logistic(x: Tensor, labels: Tensor, alpha: float = 0.01) -> tuple[Tensor, Tensor]:
    """L2-regularized logistic regression, mean log-loss + alpha/2 |w|^2, by L-BFGS (float64)."""
    z = x.double()
    w = torch.zeros(z.shape[1], dtype=torch.float64, requires_grad=True)
    b = torch.zeros((), dtype=torch.float64, requires_grad=True)
    target = labels.double()
    optimizer = torch.optim.LBFGS([w, b], lr=1.0, max_iter=300, tolerance_grad=1e-7,
                                  tolerance_change=1e-10, line_search_fn="strong_wolfe")

    def closure() -> Tensor:
        optimizer.zero_grad()
        logits = z @ w + b
        value = torch.nn.functional.binary_cross_entropy_with_logits(logits, target) \
            + 0.5 * alpha * w.pow(2).sum()
        value.backward()
        return value

    with torch.enable_grad():
        optimizer.step(closure)
    return w.detach().to(x.dtype), b.detach().to(x.dtype)


@_standardized
def ridge(x: Tensor, labels: Tensor, alpha: float = 1.0) -> tuple[Tensor, Tensor]:
    """Least squares on +-1 labels with an L2 penalty alpha |w|^2, in closed form (the dual
    (N x N) system when there are fewer examples than features)."""
    z, t = x.double(), labels.double() * 2 - 1
    b = t.mean()
    t = t - b
    n, d = z.shape
    if n < d:
        w = z.T @ torch.linalg.solve(z @ z.T + alpha * torch.eye(n, dtype=z.dtype), t)
    else:
        w = torch.linalg.solve(z.T @ z + alpha * torch.eye(d, dtype=z.dtype), z.T @ t)
    return w.to(x.dtype), b.to(x.dtype)


CLASSIFIERS: dict[str, Fit] = {"logistic": logistic, "ridge": ridge}
