"""The smallest attack parameter (epsilon, noise level, ...) that changes each prediction."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import torch
from torch import Tensor

from fattr.core.checks import check_input
from fattr.core.model import ModelFn, Params, as_model
from fattr.errors import FattrError, FattrTypeError

Attack = Callable[[Params, Tensor, Any, Tensor], Tensor]
Run = Callable[[Params, Tensor, Any, Tensor], tuple[Tensor, Tensor]]  # (x', still correct)
Correct = Callable[[Tensor, Any], Tensor]
MODES = ("linear", "binary")


class MinPerturbation(NamedTuple):
    """Per example: the smallest value that broke the prediction (NaN where none did), the
    attacked input at that value (x where none did), and whether one was found."""

    value: Tensor
    adversarial: Tensor
    found: Tensor


def min_param_perturbation(f: ModelFn, attack: Attack, values: Sequence[float] | Tensor, *,
                           mode: str = "linear", correct: Correct | None = None,
                           output: Callable[[Any], Tensor] | None = None,
                           ) -> Callable[..., MinPerturbation]:
    """For each example, the smallest of `values` at which `attack` makes the model wrong.

    Args:
        f: model function `f(params, x)`.
        attack: `attack(params, x, target, value) -> x'` where `value` is a (B,) tensor, one
            parameter value per example, e.g.
            `lambda p, x, t, eps: fattr.robust.fgsm(f, eps)(p, x, t)` or
            `lambda p, x, t, s: x + s[:, None, None, None] * noise`.
        values: the candidate values, ascending (a list or a 1-D tensor).
        mode: "linear" tries every value (any attack); "binary" bisects per example over the
            index of `values` (ceil(log2(len(values))) + 2 attack calls, for attacks whose
            success only grows with the value).
        correct: `correct(out, target) -> (B,) bool`, whether the prediction still holds;
            default `out.argmax(1) == target`.
        output: picks a tensor from the model's output.

    Returns `search(params, x, target) -> MinPerturbation(value, adversarial, found)`.
    Every example is searched at once (no host syncs, no loop over examples).

    >>> fgsm_at = lambda p, x, t, eps: fattr.robust.fgsm(f, eps, bounds=(0, 1))(p, x, t)
    >>> res = fattr.robust.min_param_perturbation(f, fgsm_at, torch.linspace(0, 0.5, 26))(
    ...     params, x, labels)
    >>> res.value          # the smallest epsilon that flips each digit (NaN: none flipped it)

    Differs from captum's MinParamPerturbation, which returns one value for the whole batch
    (the first at which the batch is not entirely correct): fattr returns one per example.
    """
    model = as_model(f, output, "min_param_perturbation")
    if not callable(attack):
        raise FattrTypeError("min_param_perturbation: attack must be callable as "
                             f"attack(params, x, target, value), got {type(attack).__name__}.")
    grid = torch.as_tensor(values, dtype=torch.float64) if not isinstance(values, Tensor) \
        else values
    if grid.ndim != 1 or grid.numel() == 0 or bool((grid[1:] < grid[:-1]).any()):
        raise FattrError("min_param_perturbation: values must be a non-empty 1-D ascending "
                         f"sequence, got {values!r}.")
    if mode not in MODES:
        raise FattrError(f"min_param_perturbation: mode must be one of {MODES}, got {mode!r}.")
    still_correct = correct or _argmax_correct

    def run(params: Params, x: Tensor, target: Any, value: Tensor) -> tuple[Tensor, Tensor]:
        adv = attack(params, x, target, value.to(x.dtype))
        ok = still_correct(model(params, adv), target)
        if not isinstance(ok, Tensor) or ok.shape != (x.shape[0],):
            raise FattrError("min_param_perturbation: correct(out, target) must return one bool "
                             f"per example, shape ({x.shape[0]},).")
        return adv, ok.bool()

    def search(params: Params, x: Tensor, target: Any = None) -> MinPerturbation:
        check_input(x, "min_param_perturbation")
        candidates = grid.to(x.device)
        batch = x.shape[0]
        if mode == "linear":
            return _linear(run, params, x, target, candidates, batch)
        return _binary(run, params, x, target, candidates, batch)

    search.__doc__ = min_param_perturbation.__doc__
    return search


def _linear(run: Run, params: Params, x: Tensor, target: Any, candidates: Tensor, batch: int,
            ) -> MinPerturbation:
    found = torch.zeros(batch, dtype=torch.bool, device=x.device)
    value = torch.full((batch,), float("nan"), dtype=candidates.dtype, device=x.device)
    best = x
    for v in candidates:  # a loop over the candidate values, each on the whole batch
        adv, ok = run(params, x, target, v.expand(batch))
        new = ~ok & ~found
        best = torch.where(new.reshape(-1, *([1] * (x.ndim - 1))), adv, best)
        value = torch.where(new, v, value)
        found = found | new
    return MinPerturbation(value, best, found)


def _binary(run: Run, params: Params, x: Tensor, target: Any, candidates: Tensor, batch: int,
            ) -> MinPerturbation:
    """Per-example bisection: invariant `lo <= first failing index <= hi`."""
    count = candidates.numel()
    _, ok_at_top = run(params, x, target, candidates[-1].expand(batch))
    lo = torch.zeros(batch, dtype=torch.long, device=x.device)
    hi = torch.full((batch,), count - 1, dtype=torch.long, device=x.device)
    for _ in range(max(count - 1, 1).bit_length()):
        mid = (lo + hi) // 2
        _, ok = run(params, x, target, candidates[mid])
        hi = torch.where(ok, hi, mid)
        lo = torch.where(ok, mid + 1, lo)
        lo = torch.minimum(lo, hi)
    adv, ok = run(params, x, target, candidates[hi])
    found = ~ok_at_top & ~ok
    nan = torch.full_like(candidates[hi], float("nan"))
    value = torch.where(found, candidates[hi], nan)
    return MinPerturbation(value, torch.where(found.reshape(-1, *([1] * (x.ndim - 1))), adv, x),
                           found)


def _argmax_correct(out: Tensor, target: Any) -> Tensor:
    if not isinstance(out, Tensor) or out.ndim != 2:
        raise FattrError("min_param_perturbation: the default correct() compares out.argmax(1) "
                         "with the target and needs (B, classes) outputs; pass correct=.")
    labels = torch.as_tensor(target, device=out.device)
    return out.argmax(1) == labels
