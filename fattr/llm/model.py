"""The language model as fattr model functions: teacher-forced scores of the target tokens.

`TeacherForced` runs the user's model once on prompt + continuation (as input embeddings) and
returns the scores (B, T + 1) of the T target tokens and of the whole sequence. By causality,
position L - 1 + t of the teacher-forced pass equals what the model computes on the prefix
prompt + target[:t], which is the pass captum makes once per target token. `Masked` puts the
baseline at the positions of the features a presence vector removes, for perturbation methods.
Both are new modules around the user's model (which is their child and is not modified);
`fattr.functional` makes them model functions.
"""

from __future__ import annotations

import inspect
from typing import Any

import torch
from torch import Tensor, nn

from fattr.core.checks import check_eval_mode
from fattr.errors import FattrError, FattrTypeError
from fattr.llm.scores import Score


def input_embeddings(model: nn.Module, method: str) -> nn.Embedding:
    """`model.get_input_embeddings()`, or a TypeError that says what is needed."""
    if not isinstance(model, nn.Module):
        raise FattrTypeError(f"{method}: model must be a torch.nn.Module (a HuggingFace causal "
                             f"LM), got {type(model).__name__}.")
    getter = getattr(model, "get_input_embeddings", None)
    try:
        embeddings = getter() if callable(getter) else None
    except NotImplementedError:
        embeddings = None
    if not isinstance(embeddings, nn.Module):
        raise FattrTypeError(
            f"{method}: the model {type(model).__name__} has no input embeddings: "
            "model.get_input_embeddings() must return the token embedding module (as every "
            "HuggingFace model does), because attributions are taken at the embedded tokens.")
    return embeddings


def vocabulary_size(embeddings: nn.Module) -> int:
    weight = getattr(embeddings, "weight", None)
    return int(getattr(embeddings, "num_embeddings", 0) or (weight.shape[0] if weight is not None
                                                            else 0))


def accepts(model: nn.Module, name: str) -> bool:
    try:
        return name in inspect.signature(model.forward).parameters
    except (TypeError, ValueError):
        return False


def logits_of(out: Any) -> Tensor:
    if isinstance(out, Tensor):
        return out
    logits = getattr(out, "logits", None)
    if logits is None and isinstance(out, (tuple, list)):
        logits = out[0]
    if not isinstance(logits, Tensor):
        raise FattrTypeError(f"fattr.llm: the model returned {type(out).__name__}; expected "
                             "logits of shape (B, L, V), as a tensor or under .logits.")
    return logits


def rows_of(logits: Tensor) -> Tensor:
    """A classifier's logits (B, C) as one row of "next-token" logits (B, 1, C)."""
    return logits[:, None] if logits.ndim == 2 else logits


class TeacherForced(nn.Module):
    """`forward(embeds, targets, attention_mask=None, position_ids=None, column=None)`: the
    scores of the target tokens, predicted at the last T positions of `embeds` (B, N, d).
    `targets` (B, T) holds token ids, -1 for padding.

    Without `column`: (B, T + 1), the score of every target token and of the sequence. With
    `column` (B,) (the same token index t < T in every row, as under `vmap` over target
    tokens): (B,), the score of token t only, the LM head applied at its position only. For the
    backward pass of one token the head's gradient is then one row, not T rows of zeros.

    A sequence classifier (logits (B, C)) is a model of one "token", its class (T = 1).
    """

    def __init__(self, model: nn.Module, score: Score):
        super().__init__()
        self.model = model
        self.score = score
        self.keep = accepts(model, "logits_to_keep")  # HF: the LM head on the kept rows only
        self.positions = accepts(model, "position_ids")
        self.cache = accepts(model, "use_cache")

    def embed(self, ids: Tensor) -> Tensor:
        return self.model.get_input_embeddings()(ids)

    def forward(self, embeds: Tensor, targets: Tensor, attention_mask: Tensor | None = None,
                position_ids: Tensor | None = None, column: Tensor | None = None) -> Tensor:
        steps = targets.shape[1]
        kwargs: dict[str, Any] = {}
        if attention_mask is not None:
            kwargs["attention_mask"] = attention_mask
        if position_ids is not None and self.positions:
            kwargs["position_ids"] = position_ids
        if self.cache:
            kwargs["use_cache"] = False
        if column is None:
            if self.keep:
                kwargs["logits_to_keep"] = steps
            logits = rows_of(logits_of(self.model(inputs_embeds=embeds, **kwargs)))
            return self.score(logits[:, -steps:], targets)
        position = embeds.shape[1] - steps + column[:1]
        if self.keep:
            kwargs["logits_to_keep"] = position
        logits = rows_of(logits_of(self.model(inputs_embeds=embeds, **kwargs)))
        if not self.keep and logits.shape[1] > 1:
            logits = logits.index_select(1, position)
        return self.score(logits[:, -1:], targets.gather(1, column[:, None]))[:, 0]


class Embedded(nn.Module):
    """`forward(x, context, groups, targets, ...)`: `TeacherForced`'s scores with the input
    embeddings `x` (B, N, d) at feature positions (`groups` >= 0) and `context` elsewhere. The
    gradient methods differentiate `x`: context positions (the continuation, tokens outside
    every feature) get exactly zero gradient, so a baseline needs to cover features only."""

    def __init__(self, scorer: TeacherForced):
        super().__init__()
        self.scorer = scorer

    def forward(self, x: Tensor, context: Tensor, groups: Tensor, targets: Tensor,
                attention_mask: Tensor | None = None, position_ids: Tensor | None = None,
                column: Tensor | None = None) -> Tensor:
        embeds = torch.where(groups.unsqueeze(-1) >= 0, x, context)
        return self.scorer(embeds, targets, attention_mask, position_ids, column)


class Masked(nn.Module):
    """`forward(present, ids, groups, base, targets, ...) -> (B, T + 1)`: the scores with the
    features that `present` (B, F) marks 0 replaced by the baseline embedding `base`. `groups`
    (B, N) gives the feature of each position of `ids` (B, N), -1 for positions never replaced."""

    def __init__(self, scorer: TeacherForced):
        super().__init__()
        self.scorer = scorer

    def forward(self, present: Tensor, ids: Tensor, groups: Tensor, base: Tensor,
                targets: Tensor, attention_mask: Tensor | None = None,
                position_ids: Tensor | None = None) -> Tensor:
        kept = (groups < 0) | present.gather(1, groups.clamp_min(0)).bool()
        embeds = torch.where(kept.unsqueeze(-1), self.scorer.embed(ids), base)
        return self.scorer(embeds, targets, attention_mask, position_ids)


def check_model(model: nn.Module, method: str) -> nn.Module:
    """The input embeddings of an eval-mode model."""
    embeddings = input_embeddings(model, method)
    check_eval_mode(model, method)  # names a Dropout or BatchNorm module in training mode
    training = [name or type(model).__name__ for name, m in model.named_modules() if m.training]
    if training:  # HuggingFace attention dropout is a config value, not a module
        raise FattrError(f"{method}: the model is in training mode ({training[0]!r} and "
                         f"{len(training) - 1} more modules), so dropout would make the "
                         "attributions random. Call model.eval() before attributing.")
    return embeddings
