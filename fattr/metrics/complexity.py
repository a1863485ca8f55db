"""Complexity of a map on its own: sparseness (Gini index) and complexity (entropy)."""

from __future__ import annotations

import torch
from torch import Tensor

from fattr.metrics.base import flat_maps, safe_divide


def sparseness(attribution: Tensor) -> Tensor:
    """Gini index of the absolute attribution: 0 for a uniform map, (n - 1)/n (the largest
    value) for a map with a single non-zero element.

        G(a) = sum_i (2i - n - 1) |a|_(i) / (n sum_i |a|_(i)),  |a|_(1) <= ... <= |a|_(n)

    Args:
        attribution: (B, ...) maps; the index is taken over all elements after the batch axis
            (for a tuple of maps, one per input, over the elements of all of them).

    Returns a Tensor (B,) in [0, (n-1)/n] (higher is sparser; 0 for an all-zero map). Quantus
    adds 1e-7 to every element before the same formula, so its values are slightly lower.

    Chalasani, Chen, Chowdhury, Wu, Jha, "Concise Explanations of Neural Networks using
    Adversarial Training" (2020), https://arxiv.org/abs/1810.06583
    """
    values = flat_maps(attribution, "sparseness").abs().sort(dim=1).values
    n = values.shape[1]
    weights = 2 * torch.arange(1, n + 1, dtype=values.dtype, device=values.device) - n - 1
    return safe_divide((weights * values).sum(1), n * values.sum(1))


def complexity(attribution: Tensor) -> Tensor:
    """Entropy of the fractional contribution of each feature: 0 for a map with a single
    non-zero element, log(n) for a uniform map.

        C(a) = -sum_i p_i log p_i,   p_i = |a_i| / sum_j |a_j|

    Args:
        attribution: (B, ...) maps; entropy over all elements after the batch axis (for a
            tuple of maps, one per input, over the elements of all of them).

    Returns a Tensor (B,) in [0, log n] (lower is simpler; 0 for an all-zero map), in nats.

    Bhatt, Weller, Moura, "Evaluating and Aggregating Feature-based Model Explanations"
    (2020), https://arxiv.org/abs/2005.00631
    """
    values = flat_maps(attribution, "complexity").abs()
    share = safe_divide(values, values.sum(1, keepdim=True))
    return torch.special.entr(share).sum(1)
