"""Compare a model's behaviour under several attacks (and the clean input) in one call."""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping
from typing import Any, NamedTuple

import torch
from torch import Tensor

from fattr.core.checks import check_count, check_input
from fattr.core.model import ModelFn, Params, as_model
from fattr.errors import FattrError, FattrTypeError

Metric = Callable[[Tensor, Any], Tensor]
ORIGINAL = "original"


class Summary(NamedTuple):
    """The metric over the attempts of one attack: mean, min and max (same shape as one
    metric value; all three equal with one attempt)."""

    mean: Tensor
    min: Tensor
    max: Tensor


def attack_comparator(f: ModelFn, attacks: Mapping[str, Callable[..., Tensor]], *,
                      metric: Metric | None = None, attempts: int = 1,
                      output: Callable[[Any], Tensor] | None = None,
                      ) -> Callable[..., dict[str, Summary]]:
    """The model's metric on the clean input and under each attack.

    Args:
        f: model function `f(params, x)`.
        attacks: `{name: attack(params, x, target) -> x'}`: fattr attacks (`fgsm`, `pgd`) or
            any transform (noise, blur, a crop); an attack that takes a `generator` keyword
            gets the call's generator (random starts, noise).
        metric: `metric(out, target) -> Tensor`; default per-example correctness
            `(out.argmax(1) == target).float()` (B,), so `.mean.mean()` is the accuracy and
            `.min.mean()` the accuracy against the best of the attempts.
        attempts: how many times each attack runs (> 1 for random attacks).
        output: picks a tensor from the model's output.

    Returns `compare(params, x, target, generator=None) -> {"original": Summary, name:
    Summary, ...}`, each Summary(mean, min, max) over the attempts.

    >>> compare = fattr.robust.attack_comparator(f, {
    ...     "FGSM 0.1": fattr.robust.fgsm(f, 0.1, bounds=(0, 1)),
    ...     "PGD 0.1": fattr.robust.pgd(f, 0.1, 0.02, 10, random_start=True, bounds=(0, 1))},
    ...     attempts=3)
    >>> {k: v.min.mean().item() for k, v in compare(params, x, labels).items()}   # accuracies

    Differs from captum's AttackComparator (a class that attacks are added to, with a
    preprocessing hook): here the attacks are a dict, and any preprocessing is part of `f` or
    of the attack functions.
    """
    model = as_model(f, output, "attack_comparator")
    if not isinstance(attacks, Mapping) or not all(callable(a) for a in attacks.values()):
        raise FattrTypeError("attack_comparator: attacks must be a dict {name: attack(params, "
                             f"x, target)}}, got {type(attacks).__name__}.")
    if ORIGINAL in attacks:
        raise FattrError(f"attack_comparator: the name {ORIGINAL!r} is reserved for the clean "
                         "input; rename that attack.")
    attempts = check_count(attempts, "attempts", "attack_comparator")
    score = metric or _correct
    random = {name: _takes_generator(a) for name, a in attacks.items()}

    def compare(params: Params, x: Tensor, target: Any = None,
                generator: torch.Generator | None = None) -> dict[str, Summary]:
        check_input(x, "attack_comparator")
        results = {ORIGINAL: _summary([score(model(params, x), target)])}
        for name, attack in attacks.items():
            kwargs = {"generator": generator} if random[name] else {}
            runs = attempts if random[name] else 1
            values = [score(model(params, attack(params, x, target, **kwargs)), target)
                      for _ in range(runs)]
            results[name] = _summary(values)
        return results

    compare.__doc__ = attack_comparator.__doc__
    return compare


def _summary(values: list[Tensor]) -> Summary:
    stacked = torch.stack([torch.as_tensor(v) for v in values])
    return Summary(stacked.mean(0), stacked.min(0).values, stacked.max(0).values)


def _correct(out: Tensor, target: Any) -> Tensor:
    if not isinstance(out, Tensor) or out.ndim != 2:
        raise FattrError("attack_comparator: the default metric compares out.argmax(1) with "
                         "the target and needs (B, classes) outputs; pass metric=.")
    return (out.argmax(1) == torch.as_tensor(target, device=out.device)).float()


def _takes_generator(attack: Callable[..., Tensor]) -> bool:
    try:
        return "generator" in inspect.signature(attack).parameters
    except (TypeError, ValueError):
        return False
