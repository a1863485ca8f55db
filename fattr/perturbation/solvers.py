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
                  unpenalized: int = 0) -> Tensor:
    """Per-example (weighted, ridge) least squares, shape (B, M):

        beta_b = argmin sum_s w_sb (y_sb - design_s . beta)^2 + ridge * ||beta[unpenalized:]||^2

    `design` (S, M) is shared; `y` (S, B); `weights` None, (S,) or (S, B). Solved with the
    pseudo-inverse of the sqrt-weighted system (ridge rows appended), so a rank-deficient design
    (fewer samples than unknowns) gives the minimum-norm solution, as sklearn's LinearRegression
    does, on every device.
    """
    samples, size = design.shape
    if weights is None:
        a, rhs = design, y
    else:
        root = weights.sqrt().reshape(samples, -1).expand_as(y)
        a = root.T.unsqueeze(-1) * design  # (B, S, M)
        rhs = (root * y).T.unsqueeze(-1)  # (B, S, 1)
    if ridge > 0:
        eye = torch.eye(size, dtype=design.dtype, device=design.device)[unpenalized:]
        penalty = (math.sqrt(ridge) * eye).expand(*a.shape[:-2], -1, -1)
        a = torch.cat([a, penalty], -2)
        rhs = torch.cat([rhs, rhs.new_zeros((*rhs.shape[:-2], size - unpenalized,
                                             rhs.shape[-1]))], -2)
    solution = torch.linalg.pinv(a) @ rhs
    return solution.T if weights is None else solution.squeeze(-1)
