"""Running a method over all target tokens at once: `torch.func.vmap` over the score columns
(the T tokens; for perturbation methods also the sequence). The model's forward pass does not
depend on the column, so under that vmap it runs once; only the backward pass (gradient
methods) or the target selection and the solver (perturbation methods) are batched.

PyTorch's fused attention (`F.scaled_dot_product_attention`, HuggingFace's "sdpa") has no vmap
batching rule for its CPU backward, so torch loops over the T columns for that one op. That
measured faster than attention written as matmuls (whose batched backward materializes T
attention matrices) and than one forward pass followed by T `autograd.grad(retain_graph=True)`
calls (benchmarks/bench_llm.py, docs/llm.md), so the model runs as it is.
"""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Callable, Iterator
from typing import Any

import torch
from torch import Tensor, nn

import fattr
from fattr.llm.inputs import Batch
from fattr.llm.methods import Method
from fattr.llm.model import Embedded, Masked, TeacherForced
from fattr.llm.scores import Score

SDPA_FALLBACK = "There is a performance drop because we have not yet implemented the batching"


def over_targets(run: Callable[[Tensor], Tensor], columns: Tensor, chunk: int | None,
                 ) -> Tensor:
    """run(c) for every row c of `columns` (K, B) -> (K, B, ...), as one `vmap` (in chunks of
    `chunk` rows; None: all at once). `run` calls the model once: its forward pass does not
    depend on c, so it runs once per chunk and only what follows c is batched. Random draws
    are shared by all K rows."""
    return torch.func.vmap(run, randomness="same", chunk_size=chunk)(columns)


def gradient_table(model: nn.Module, spec: Method, score: Score, batch: Batch, base: Tensor,
                   kwargs: dict[str, Any], generator: torch.Generator | None,
                   chunk: int | None) -> Tensor:
    """(T + 1, B, F): the method on the input embeddings, summed over the embedding axis and
    over each feature's tokens; one backward pass per target token, all in one vmap. The
    sequence row is their sum where the method and the score are linear (the sequence score
    is the sum of the token scores), else one more attribution."""
    scorer = TeacherForced(model, score)
    f, params = fattr.functional(Embedded(scorer))
    device = base.device
    with torch.no_grad():
        x = scorer.embed(batch.ids.to(device))
    extras = dict(context=x, **batch.model_kwargs(device))
    attr = spec.build(f, **kwargs)
    per_call: dict[str, Any] = {}
    if "baseline" in spec.per_call:
        per_call["baseline"] = base
    if "baselines" in spec.per_call:
        per_call["baselines"] = base.reshape(-1, 1, base.shape[-1]).expand(-1, *x.shape[1:])
    if "generator" in spec.per_call:
        per_call["generator"] = generator
    steps = batch.targets.shape[1]
    with replayable(generator) as replay, warnings.catch_warnings():
        warnings.filterwarnings("ignore", SDPA_FALLBACK, UserWarning)  # measured: the faster
        token = lambda c: attr(params, x, None, model_kwargs={**extras, "column": c}, **per_call)
        tokens = feature_sums(over_targets(token, columns(batch, steps, device), chunk), batch)
        if spec.linear(kwargs) and score.name != "prob":
            return torch.cat([tokens, tokens.sum(0, keepdim=True)])
        replay()
        whole = torch.full((x.shape[0],), steps, device=device)
        sequence = attr(params, x, whole, model_kwargs=extras, **per_call)
    return torch.cat([tokens, feature_sums(sequence[None], batch)])


def perturbation_table(model: nn.Module, spec: Method, score: Score, batch: Batch, base: Tensor,
                       kwargs: dict[str, Any], generator: torch.Generator | None,
                       chunk: int | None) -> Tensor:
    """(T + 1, B, F): the method on a presence vector over the features (0 puts the baseline
    embedding at a feature's tokens), every perturbed forward pass scoring all T tokens and the
    sequence."""
    f, params = fattr.functional(Masked(TeacherForced(model, score)))
    device = base.device
    present = torch.ones(batch.ids.shape[0], max(batch.feature_counts), dtype=torch.long,
                         device=device)
    extras = dict(ids=batch.ids.to(device), base=base.reshape(1, 1, -1),
                  **batch.model_kwargs(device))
    attr = spec.build(f, **kwargs)
    per_call: dict[str, Any] = {"baseline": 0, "model_kwargs": extras}
    if "generator" in spec.per_call:
        per_call["generator"] = generator
    run = lambda c: attr(params, present, c, **per_call)
    with torch.no_grad():
        return over_targets(run, columns(batch, batch.targets.shape[1] + 1, device), chunk)


def columns(batch: Batch, count: int, device: torch.device) -> Tensor:
    """(count, B): score column c for every example (columns 0..T-1: the target tokens, T: the
    sequence)."""
    return torch.arange(count, device=device)[:, None].expand(count, batch.ids.shape[0])


def feature_sums(values: Tensor, batch: Batch) -> Tensor:
    """(K, B, N, d) attributions of the embeddings -> (K, B, F) sums over each feature's
    positions and the embedding axis."""
    values = values.detach().sum(-1)
    count = max(batch.feature_counts)
    groups = batch.groups.to(values.device)
    index = torch.where(groups >= 0, groups, count).expand_as(values)
    total = values.new_zeros((*values.shape[:2], count + 1))
    return total.scatter_add(2, index, values)[..., :count]


@contextlib.contextmanager
def replayable(generator: torch.Generator | None) -> Iterator[Callable[[], None]]:
    """Yields `replay()`, which rewinds `generator` (None: torch's global generator) to its
    state at the start of the block, so a second attribution draws what the first drew."""
    state = torch.get_rng_state() if generator is None else generator.get_state()
    rewind = torch.set_rng_state if generator is None else generator.set_state
    yield lambda: rewind(state)
