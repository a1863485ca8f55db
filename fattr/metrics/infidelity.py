"""Infidelity (Yeh et al. 2019): how well attribution . perturbation predicts the output change."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import torch
from torch import Tensor

from fattr.core.call import finish, prepare
from fattr.core.checks import check_count, check_generator, check_non_negative
from fattr.core.chunking import check_batch_size
from fattr.core.inputs import Inputs
from fattr.core.model import ModelFn, Params
from fattr.core.noise import relative_noise
from fattr.core.targets import TargetSpec
from fattr.errors import FattrError
from fattr.metrics.base import (
    attributions_for,
    model_of,
    perturbations_for,
    row_scores,
    safe_divide,
)


def infidelity(f: ModelFn, params: Params, x: Tensor | Inputs, attribution: Tensor | Inputs,
               target: TargetSpec = None, perturbations: Tensor | Inputs | None = None,
               samples: int = 10, generator: torch.Generator | None = None, *,
               stdev: float = 0.1, normalize: bool = False, batch_size: int | None = None,
               output: Callable[[Any], Tensor] | None = None, model_args: Any = (),
               model_kwargs: Mapping[str, Any] | None = None) -> Tensor:
    """Expected squared error between `I . attribution` and the output drop `f(x) - f(x - I)`.

        INFD(a, x) = E_I [ (sum(I * a) - (f(x)_t - f(x - I)_t))^2 ]

    estimated as the mean over S perturbations. With `normalize=True` the attribution is first
    rescaled by the least-squares factor beta = E[(I.a) d] / E[(I.a)^2] (d the output drop),
    which makes the score invariant to the attribution's scale (Yeh et al.'s own code).

    Args:
        f, params, x: the model function, its parameters and the inputs (B, ...), or a tuple
            of inputs (one per model input).
        attribution: shaped like x (a tuple for a tuple x); I . a sums over every input.
        target: as for every method (int, per-example indices, callable...).
        perturbations: I of shape (S, B, ...) (a tuple, one per input, for a tuple x), used
            as given (x~ = x - I). If None, S = `samples` draws I ~ N(0, (stdev * (max(x_b) -
            min(x_b)))^2) per example (and per input, with that input's range) from
            `generator`.
        samples: perturbations per example when they are drawn (default 10, as captum).
        stdev: noise level of the drawn perturbations, relative to each example's value range
            (default 0.1; fattr's choice, captum has no default perturbation).
        normalize: rescale the attribution optimally first (captum's `normalize`, default False
            as in captum).
        batch_size: the most model inputs per forward call; the result does not depend on it.
        output: picks a tensor from the model's output.
        model_args, model_kwargs: extra forward arguments, `model(*x, *model_args,
            **model_kwargs)` (captum's `additional_forward_args`); per-example tensors (first
            axis B) follow their example through every perturbation.

    Returns a Tensor (B,) (lower is better); one value for a per-example model. Differentiable
    in params, x and attribution.

    >>> a = fattr.saliency(f, abs=False)(params, x, labels)
    >>> g = torch.Generator().manual_seed(0)
    >>> fattr.metrics.infidelity(f, params, x, a, labels, generator=g)

    captum: `captum.metrics.infidelity(model, lambda x: (I, x - I), x, a, target=t,
    normalize=...)` with the same perturbations gives the same values (captum returns them with
    the sample axis innermost, fattr takes (S, B, ...)).

    Yeh, Hsieh, Suggala, Inouye, Ravikumar, "On the (In)fidelity and Sensitivity of
    Explanations" (2019), https://arxiv.org/abs/1901.09392
    """
    method = "infidelity"
    model = model_of(f, output, method)
    check_batch_size(batch_size, method)
    check_generator(generator, method)
    if not isinstance(normalize, bool):
        raise FattrError(f"{method}: normalize must be True or False, got {normalize!r}.")
    call = prepare(model, x, target, model_args, model_kwargs)
    attributions = attributions_for(attribution, call, model, method)
    if call.batch == 0:
        return call.first.new_zeros(0)
    if perturbations is None:
        check_count(samples, "samples", method)
        check_non_negative(stdev, "stdev", method)
        moves = tuple(relative_noise(t, samples, stdev, generator) for t in call.inputs)
    else:
        moves = perturbations_for(perturbations, call.inputs, call.single, method,
                                  add_batch=model.per_example)
    # sample 0 is x itself (a zero perturbation), so f(x) comes out of the same chunks
    shifts = tuple(torch.cat([torch.zeros_like(m[:1]), m]) for m in moves)
    scores = row_scores(model, params, call, len(shifts[0]),
                        lambda s, b: tuple(t[b] - m[s, b] for t, m in zip(call.inputs, shifts)),
                        batch_size)
    drop = scores[:1] - scores[1:]  # (S, B)
    dot = sum((m * a).flatten(2).sum(2) for m, a in zip(moves, attributions))
    if normalize:
        beta = safe_divide((dot * drop).sum(0), dot.square().sum(0))
        dot = beta * dot
    return finish(model, (dot - drop).square().mean(0))
