"""Feature ablation: the output drop when one feature group is set to the baseline."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from torch import Tensor

from fattr.core.model import ModelFn
from fattr.perturbation.engine import feature_method


def feature_ablation(f: ModelFn, batch_size: int | None = None, *,
                     output: Callable[[Any], Tensor] | None = None) -> Callable[..., Tensor]:
    """Drop in the target score when an element's feature group is replaced by the baseline.

        abl(x)_e = f(x) - f(x with every element of feature(e) set to the baseline)

    Args:
        f: model function `f(params, x)`.
        batch_size: the most model inputs per forward call, mixed across examples and features
            (captum's perturbations_per_eval counts whole batches instead); None (default)
            picks a chunk from the input size (about 2**19 input elements per call on the
            CPU, 2**24 on a GPU; `fattr.core.chunking.default_batch_size`). The result does not
            depend on it.
        output: picks a tensor from the model's output.

    Returns `attr(params, x, target=None, *, baseline=None, feature_mask=None) -> Tensor`
    shaped like x. `feature_mask` holds integer feature ids broadcastable to x, per example
    (B, ...) or shared; None makes every element its own feature. Every element of a group gets
    the group's drop (as captum). Forward-only: x may be an integer tensor (token ids with a
    baseline id). Differentiable in params and works under `torch.func.vmap` over targets.

    >>> segments = torch.arange(64).reshape(8, 8).repeat_interleave(8, 0).repeat_interleave(8, 1)
    >>> a = fattr.feature_ablation(f, batch_size=256)(params, x, labels, feature_mask=segments)

    The method as implemented in captum (FeatureAblation); see e.g. Zeiler and Fergus (2014),
    https://arxiv.org/abs/1311.2901, for occluding input regions.
    """
    return feature_method(f, "feature_ablation", lambda game, _: game.drops(), batch_size,
                          output, feature_ablation.__doc__)
