"""Solvers: the engine's scores of perturbed inputs -> one value per feature and example.

All are plain differentiable torch ops (no `.item()`, no detach), batched over examples, so an
attribution stays differentiable in the parameters and works under `vmap` over targets.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor


def shapley_weights(keep: Tensor, dtype: torch.dtype) -> Tensor:
    """W (P, F) such that phi = W^T v gives exact Shapley values from the scores v of the
    coalitions `keep` (P, F) (all 2^F of them):

        phi_i = sum_{S not containing i} |S|! (F - |S| - 1)! / F! * (v(S + i) - v(S)),

    so a coalition S gets +w(|S| - 1) for its members and -w(|S|) for the others.
    """
    count = keep.shape[1]
    w = torch.tensor([math.factorial(s) * math.factorial(count - 1 - s) / math.factorial(count)
                      for s in range(count)], dtype=torch.float64, device=keep.device)
    zero = w.new_zeros(1)
    size = keep.sum(1)
    inside, outside = torch.cat([zero, w])[size], torch.cat([w, zero])[size]
    return torch.where(keep, inside[:, None], -outside[:, None]).to(dtype)


def permutation_marginals(values: Tensor, permutations: Tensor) -> Tensor:
    """Mean marginal contribution of each feature along sampled orderings.

    `values` (S, F + 1, B) holds the scores of the prefixes of length 0..F of each permutation
    (S, F); the step from length k to k + 1 is credited to feature permutations[s, k].
    Returns (B, F).
    """
    samples, count = permutations.shape
    steps = values[:, 1:] - values[:, :-1]
    batch = steps.shape[-1]
    credited = steps.permute(2, 0, 1).reshape(batch, samples * count)
    index = permutations.reshape(1, samples * count).expand(batch, -1)
    return credited.new_zeros((batch, count)).scatter_add(1, index, credited) / samples


def least_squares(design: Tensor, y: Tensor, weights: Tensor | None = None, ridge: float = 0.0,
                  intercept: bool = False) -> Tensor:
    """Per-example (weighted, ridge) least squares, shape (B, M):

        beta_b = argmin sum_s w_sb (y_sb - c_b - design_s . beta)^2 + ridge * ||beta||^2

    with a free, unpenalized intercept c_b when `intercept` (fitted, as sklearn does, by
    centring design and y on their weighted means; not returned), else c_b = 0. `design`
    (S, M) is shared; `y` (S, B); `weights` None, (S,) or (S, B). Solved with the
    pseudo-inverse of the sqrt-weighted system (ridge rows appended), so a rank-deficient
    design (fewer samples than unknowns) gives the minimum-norm beta, as sklearn's
    LinearRegression does, on every device.
    """
    size = design.shape[1]
    if weights is None and not intercept:  # one shared system, B right-hand sides
        a, rhs = design, y
    else:
        w = y.new_ones(()) if weights is None else weights.reshape(design.shape[0], -1)
        w = w.expand_as(y)  # (S, B)
        root = w.sqrt().T.unsqueeze(-1)  # (B, S, 1)
        a, rhs = design.expand(y.shape[1], -1, -1), y.T.unsqueeze(-1)  # (B, S, M), (B, S, 1)
        if intercept:
            share = (w / w.sum(0)).T.unsqueeze(-1)
            a = a - (share * a).sum(1, keepdim=True)
            rhs = rhs - (share * rhs).sum(1, keepdim=True)
        a, rhs = root * a, root * rhs
    if ridge > 0:
        eye = torch.eye(size, dtype=design.dtype, device=design.device)
        a = torch.cat([a, (math.sqrt(ridge) * eye).expand(*a.shape[:-2], -1, -1)], -2)
        rhs = torch.cat([rhs, rhs.new_zeros((*rhs.shape[:-2], size, rhs.shape[-1]))], -2)
    solution = torch.linalg.pinv(a) @ rhs
    return solution.T if solution.ndim == 2 else solution.squeeze(-1)
