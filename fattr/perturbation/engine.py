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

Masks live on the flattened elements of all inputs (a tuple x is one feature vector, split back
into the inputs for each forward pass). A model that returns ONE value for the whole batch (a
loss, with `target=None`) is a game of the batch as a whole, as in captum: every perturbation
removes its features from all examples at once and the result has a batch axis of one.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from fattr.core.baselines import baselines_for
from fattr.core.call import Call, attribution, check_keywords
from fattr.core.checks import check_generator
from fattr.core.chunking import check_batch_size, chunked, default_batch_size
from fattr.core.inputs import Inputs, flatten_inputs, split_flat
from fattr.core.model import Model, ModelFn, Params, as_model
from fattr.errors import FattrError
from fattr.perturbation.features import Features, feature_groups

Removed = Callable[[Tensor, Tensor], Tensor]  # (plan rows, their examples) -> (N, D) bool


def _as_score(t: Tensor) -> Tensor:
    """Scores in floating point (an integer model output would make solver weights zero)."""
    return t if t.is_floating_point() else t.to(torch.get_default_dtype())


def full_scores(model: Model, params: Params, call: Call, batch_size: int | None) -> Tensor:
    """Target score of every unperturbed example, shape (B,), `batch_size` at a time."""
    example = torch.arange(call.batch, device=call.first.device)
    run = lambda b: _as_score(call.score(model, params, tuple(t[b] for t in call.inputs), b))
    return chunked(run, example, batch_size=batch_size)


def batch_output(model: Model, params: Params, call: Call) -> Tensor | None:
    """The model's value for the whole batch when, with `target=None`, it returns one value
    for all examples together (a loss); None otherwise."""
    if call.target.spec is not None:
        return None
    out = call.run(model, params, call.inputs)
    return _as_score(out) if isinstance(out, Tensor) and out.ndim == 0 else None


@dataclass(frozen=True)
class Game:
    """One call's perturbation problem over feature groups: the engine bound to a model, an
    input batch, its fills (the baselines) and its features. v(S) is the target score of x with
    the features outside S taken from the fill. With `whole` (a model that returns one value
    for the batch), v(S) is that value with the features removed from every example: the game
    then has one "example"."""

    model: Model
    params: Params
    call: Call
    fills: Inputs
    features: Features
    batch_size: int | None
    whole: Tensor | None = None

    @property
    def batch(self) -> int:
        """The examples of the game (1 for a whole-batch value)."""
        return 1 if self.whole is not None else self.call.batch

    @property
    def device(self) -> torch.device:
        return self.call.first.device

    def flat(self) -> Tensor:
        """The inputs as one flat row per example (B, D)."""
        return flatten_inputs(self.call.inputs)

    def flat_fill(self) -> Tensor:
        return flatten_inputs(self.fills)

    def _rows(self, removed: Tensor, b: Tensor, source: Tensor, fills: Inputs) -> Inputs:
        """Inputs of rows b with the elements `removed` (N, D) taken from fills[source]."""
        masks = split_flat(removed, self.call.inputs)
        return tuple(torch.where(m, fill[source], x[b])
                     for m, fill, x in zip(masks, fills, self.call.inputs))

    def scores(self, plan: Tensor, removed: Removed, fills: Inputs | None = None,
               source: Tensor | None = None) -> Tensor:
        """Target score of every perturbed input, shape (P, B) ((P, 1) for a whole-batch value).

        Row (p, b) is x[b] with the elements `removed(plan[p], b)` taken from
        `fills[source[p, b]]` (default `fills[b]`, one baseline per example). Rows are sent
        `batch_size` at a time, mixed across examples and perturbations.
        """
        fills = self.fills if fills is None else fills
        count, batch, device = plan.shape[0], self.call.batch, self.device
        if self.whole is not None:  # one forward of the whole batch per perturbation
            every = torch.arange(batch, device=device)

            def perturbation(p: Tensor) -> Tensor:
                b = every if source is None else source[p[0]]
                inputs = self._rows(removed(plan[p].expand(batch, *plan.shape[1:]), every), every,
                                    b, fills)
                return _as_score(self.call.run(self.model, self.params, inputs)).reshape(1)

            return chunked(perturbation, torch.arange(count, device=device),
                           batch_size=1).reshape(count, 1)
        perturbation = torch.arange(count, device=device).repeat_interleave(batch)
        example = torch.arange(batch, device=device).repeat(count)
        origin = example if source is None else source.reshape(-1)

        def chunk(p: Tensor, b: Tensor, s: Tensor) -> Tensor:
            inputs = self._rows(removed(plan[p], b), b, s, fills)
            return _as_score(self.call.score(self.model, self.params, inputs, b))

        return chunked(chunk, perturbation, example, origin,
                       batch_size=self.batch_size).reshape(count, batch)

    def coalitions(self, keep: Tensor) -> Tensor:
        """v(S) for every coalition of `keep` (P, F) bool (True keeps a feature): (P, B)."""
        return self.scores(keep, self.features.removed)

    def full(self) -> Tensor:
        """The unperturbed scores f(x), (B,) ((1,) for a whole-batch value)."""
        if self.whole is not None:
            return self.whole.reshape(1)
        return full_scores(self.model, self.params, self.call, self.batch_size)

    def drops(self, fills: Inputs | None = None, source: Tensor | None = None) -> Tensor:
        """f(x) - f(x with one feature taken from the fill), every feature and example: (B, F)."""
        plan = torch.arange(self.features.count, device=self.device)
        return (self.full() - self.scores(plan, single_feature(self.features), fills, source)).T


def single_feature(features: Features) -> Removed:
    """Mask generator for plans of feature ids (P,): row p removes feature plan[p] alone."""
    return lambda ids, example: features.of(example) == ids[:, None]


def prefixes(features: Features, rank: Tensor) -> Removed:
    """Mask generator for plans of (permutation s, length k) pairs (P, 2): keeps the first k
    features of permutation s, where rank[s, i] is the position of feature i in it."""
    return lambda rows, example: rank[rows[:, 0]].gather(1, features.of(example)) >= rows[:, 1:]


Solve = Callable[[Game, "torch.Generator | None"], Tensor]


def game_of(model: Model, params: Params, call: Call, batch_size: int | None,
            baseline: Any, feature_mask: Any) -> Game:
    """The `Game` of one call: its fills, features, and whether the model returns one value
    for the whole batch. `batch_size=None` takes `default_batch_size` of the inputs."""
    method = model.method
    if batch_size is None:
        batch_size = default_batch_size(call.inputs)
    fills = baselines_for(baseline, call.inputs, method)
    features = feature_groups(feature_mask, call.inputs, method)
    whole = batch_output(model, params, call)
    if whole is not None and not features.shared:
        raise FattrError(f"{method}: the model returns one value for the whole batch, so every "
                         "perturbation removes a feature from all examples at once, and "
                         "feature_mask must be shared by the examples (no per-example masks).")
    return Game(model, params, call, fills, features, batch_size, whole)


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

    def compute(params: Params, call: Call, **given: Any) -> Any:
        check_keywords(given, per_call, method)
        check_generator(given.get("generator"), method)
        game = game_of(model, params, call, batch_size, given.get("baseline"),
                       given.get("feature_mask"))
        phi = solve(game, given.get("generator"))
        return call.unpack(as_result(game.features.expand(phi), call.inputs))

    batched = tuple(n for n in per_call if n in ("baseline", "feature_mask"))
    return attribution(model, compute, gradient=False, empty=empty_result,
                       batched_kwargs=batched, keywords=per_call, doc=doc)


def random_permutations(count: int, size: int, generator: torch.Generator | None,
                        device: torch.device) -> Tensor:
    """`count` independent uniform random permutations of range(size), shape (count, size)."""
    keys = torch.rand((count, size), generator=generator, device=device)
    return keys.argsort(1)


def as_result(attributions: Inputs, inputs: Inputs) -> Inputs:
    """Each input's dtype for floating inputs; the scores' dtype for integer inputs such as
    token ids."""
    return tuple(a.to(x.dtype) if x.is_floating_point() else a
                 for a, x in zip(attributions, inputs))


def empty_result(call: Call) -> Any:
    """The attribution of an empty batch."""
    return call.unpack(tuple(
        torch.zeros(x.shape, dtype=x.dtype if x.is_floating_point() else
                    torch.get_default_dtype(), device=x.device) for x in call.inputs))
