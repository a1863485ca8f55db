"""The perturbation engine: a plan of perturbations -> chunked forward passes -> target scores.

Every perturbation method is a mask generator and a solver over this one engine. A plan is a
tensor with one row per perturbation; a mask generator `removed(rows, example)` turns plan rows
(and the example of each row) into a boolean element mask, built chunk by chunk so that no
(P, *x.shape) mask ever exists; those elements of x[example] are replaced by a fill value (the
baseline, or another example for permutation). The engine scores every (perturbation, example)
pair, `batch_size` model inputs per forward, mixed across examples and perturbations; no Python
loop over examples. Mask generators: `single_feature` (ablation, permutation),
`Features.removed` (coalitions: exact Shapley, KernelSHAP, LIME), `prefixes` (Shapley value
sampling), and occlusion's windows. Solvers (`solvers.py`) turn the (P, B) scores into one value
per feature. `feature_method` wires the per-call checks, the engine (as a `Game`) and a solver
into a public attribution function. Random draws happen once, up front, in the solvers, from
the caller's generator, so nothing depends on `batch_size`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from fattr.core.baselines import baseline_like
from fattr.core.chunking import check_batch_size, chunked
from fattr.core.model import Call, Model, ModelFn, Params, as_model, attribution
from fattr.errors import FattrTypeError
from fattr.perturbation.features import Features, feature_groups

Removed = Callable[[Tensor, Tensor], Tensor]


def perturbed_scores(model: Model, params: Params, call: Call, plan: Tensor, removed: Removed,
                     fill: Tensor, batch_size: int | None, source: Tensor | None = None,
                     ) -> Tensor:
    """Target score of every perturbed input, shape (P, B).

    Row (p, b) is x[b] with the elements `removed(plan[p], b)` taken from `fill[source[p, b]]`
    (default `fill[b]`, so `fill` is then one baseline per example).
    """
    count, batch, device = plan.shape[0], call.batch, call.x.device
    perturbation = torch.arange(count, device=device).repeat_interleave(batch)
    example = torch.arange(batch, device=device).repeat(count)
    source = example if source is None else source.reshape(-1)

    def chunk(p: Tensor, b: Tensor, s: Tensor) -> Tensor:
        inputs = torch.where(removed(plan[p], b), fill[s], call.x[b])
        return call.target.select(model(params, inputs), b)

    return chunked(chunk, perturbation, example, source, batch_size=batch_size).reshape(count,
                                                                                        batch)


def model_scores(model: Model, params: Params, call: Call, batch_size: int | None) -> Tensor:
    """Target score of every unperturbed example, shape (B,), `batch_size` at a time."""
    example = torch.arange(call.batch, device=call.x.device)
    return chunked(lambda x, b: call.target.select(model(params, x), b), call.x, example,
                   batch_size=batch_size)


def single_feature(features: Features) -> Removed:
    """Mask generator for plans of feature ids (P,): row p removes feature plan[p] alone."""
    return lambda ids, example: (features.of(example) == ids[:, None]).reshape(
        -1, *features.shape[1:])


def prefixes(features: Features, rank: Tensor) -> Removed:
    """Mask generator for plans of (permutation s, length k) pairs (P, 2): keeps the first k
    features of permutation s, where rank[s, i] is the position of feature i in it."""
    return lambda rows, example: (rank[rows[:, 0]].gather(1, features.of(example))
                                  >= rows[:, 1:]).reshape(-1, *features.shape[1:])


@dataclass(frozen=True)
class Game:
    """One call's perturbation problem over feature groups: the engine bound to a model, an
    input batch, its fill (the baseline) and its features. v(S) is the target score of x with
    the features outside S taken from the fill."""

    model: Model
    params: Params
    call: Call
    fill: Tensor
    features: Features
    batch_size: int | None

    def scores(self, plan: Tensor, removed: Removed, fill: Tensor | None = None,
               source: Tensor | None = None) -> Tensor:
        """`perturbed_scores` of this call: (P, B)."""
        return perturbed_scores(self.model, self.params, self.call, plan, removed,
                                self.fill if fill is None else fill, self.batch_size, source)

    def coalitions(self, keep: Tensor) -> Tensor:
        """v(S) for every coalition of `keep` (P, F) bool (True keeps a feature): (P, B)."""
        return self.scores(keep, self.features.removed)

    def full(self) -> Tensor:
        """The unperturbed scores f(x), (B,)."""
        return model_scores(self.model, self.params, self.call, self.batch_size)

    def drops(self, fill: Tensor | None = None, source: Tensor | None = None) -> Tensor:
        """f(x) - f(x with one feature taken from the fill), every feature and example: (B, F)."""
        plan = torch.arange(self.features.count, device=self.call.x.device)
        return (self.full() - self.scores(plan, single_feature(self.features), fill, source)).T


Solve = Callable[[Game, "torch.Generator | None"], Tensor]


def feature_method(f: ModelFn, method: str, solve: Solve, batch_size: int | None,
                   output: Callable[[Any], Tensor] | None, doc: str | None,
                   per_call: tuple[str, ...] = ("baseline", "feature_mask"),
                   ) -> Callable[..., Tensor]:
    """The public attribution function of a method over feature groups.

    Per call: validates the baseline and the feature mask, binds the engine into a `Game` and
    hands it to `solve(game, generator)`, which returns one value per example and feature
    (B, F); every element then gets its feature's value. `per_call` names the keyword
    arguments the method takes (a subset of baseline, feature_mask, generator).
    """
    check_batch_size(batch_size, method)
    model = as_model(f, output, method)

    def compute(params: Params, call: Call, **given: Any) -> Tensor:
        check_per_call(given, per_call, method)
        x = call.x
        fill = baseline_like(given.get("baseline"), x, method)
        features = feature_groups(given.get("feature_mask"), x, method)
        phi = solve(Game(model, params, call, fill, features, batch_size),
                    given.get("generator"))
        return as_result(features.expand(phi), x)

    batched = tuple(n for n in per_call if n in ("baseline", "feature_mask"))
    return attribution(model, compute, gradient=False, empty=empty_result,
                       batched_kwargs=batched, doc=doc)


def random_permutations(count: int, size: int, generator: torch.Generator | None,
                        device: torch.device) -> Tensor:
    """`count` independent uniform random permutations of range(size), shape (count, size)."""
    keys = torch.rand((count, size), generator=generator, device=device)
    return keys.argsort(1)


def as_result(attribution: Tensor, x: Tensor) -> Tensor:
    """x's dtype for floating inputs; the scores' dtype for integer inputs such as token ids."""
    return attribution.to(x.dtype) if x.is_floating_point() else attribution


def empty_result(x: Tensor) -> Tensor:
    """The attribution of an empty batch."""
    dtype = x.dtype if x.is_floating_point() else torch.get_default_dtype()
    return torch.zeros(x.shape, dtype=dtype, device=x.device)


def check_per_call(given: dict[str, Any], names: tuple[str, ...], method: str) -> None:
    """Per-call keyword arguments must be ones the method takes."""
    unknown = sorted(set(given) - set(names))
    if unknown:
        raise FattrTypeError(f"{method}: unexpected argument {unknown[0]}=; this method takes "
                             f"{', '.join(n + '=' for n in names)} after (params, x, target).")
