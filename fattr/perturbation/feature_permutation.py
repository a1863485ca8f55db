"""Feature permutation (Breiman 2001; Fisher et al. 2019): shuffle one feature across the batch."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor

from fattr.core.model import ModelFn
from fattr.errors import FattrError
from fattr.perturbation.engine import Game, feature_method, random_permutations


def batch_permutations(features: int, batch: int, generator: torch.Generator | None,
                       device: torch.device) -> Tensor:
    """One random permutation of the batch per feature, (features, batch); never the identity.

    A draw that happens to be the identity is replaced by the cyclic shift by one (captum
    redraws instead), so every feature really moves. These are the permutations
    `feature_permutation` uses for the same generator state.
    """
    permutations = random_permutations(features, batch, generator, device)
    order = torch.arange(batch, device=device)
    identity = (permutations == order).all(1, keepdim=True)
    return torch.where(identity, order.roll(1), permutations)


def feature_permutation(f: ModelFn, batch_size: int | None = None, *,
                        output: Callable[[Any], Tensor] | None = None) -> Callable[..., Tensor]:
    """Drop in the target score when a feature group is shuffled across the batch.

        perm(x)_{b,e} = f(x_b) - f(x_b with feature(e) taken from x_{pi(b)})

    with one random permutation pi of the batch per feature, drawn up front from `generator`
    (`batch_permutations`); a draw equal to the identity becomes the shift by one.

    Args:
        f: model function `f(params, x)`.
        batch_size: the most model inputs per forward call, mixed across examples and features;
            None (default) picks a chunk from the input size (`fattr.core.chunking.
            default_batch_size`). The result does not depend on it.
        output: picks a tensor from the model's output.

    Returns `attr(params, x, target=None, *, feature_mask=None, generator=None) -> Tensor`
    shaped like x (feature_mask as in `feature_ablation`; there is no baseline: the other
    examples are the reference). Needs a batch of at least 2 examples, so per-example models
    (`fattr.per_example`) cannot use it. Differentiable in params. Under `torch.func.vmap`
    over targets the draw happens inside vmap: pass `randomness="same"` to vmap (every target
    then sees the same permutations); vmap's default `randomness="error"` raises.

    >>> g = torch.Generator().manual_seed(0)
    >>> a = fattr.feature_permutation(f)(params, x, labels, generator=g)

    Fisher, Rudin, Dominici, "All Models are Wrong, but Many are Useful" (2019),
    https://arxiv.org/abs/1801.01489 (captum's FeaturePermutation).
    """

    def solve(game: Game, generator: torch.Generator | None) -> Tensor:
        batch = game.call.batch
        if batch < 2:
            raise FattrError(
                "feature_permutation: shuffling a feature across the batch needs at least 2 "
                f"examples, got a batch of {batch}. Attribute several examples in one call "
                "(per-example models cannot use this method).")
        order = batch_permutations(game.features.count, batch, generator, game.device)
        return game.drops(game.call.inputs, order)

    return feature_method(f, "feature_permutation", solve, batch_size, output,
                          feature_permutation.__doc__, per_call=("feature_mask", "generator"))
