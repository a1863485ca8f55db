"""What is attributed for each target token: its log-probability, probability, logit, or any
function of the log-probabilities; and the score of the whole sequence next to them."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor

from fattr.errors import FattrError, FattrTypeError

SCORES = ("log_prob", "prob", "logit")
ScoreSpec = str | Callable[[Tensor], Tensor]


@dataclass(frozen=True)
class Score:
    """Turns next-token logits (B, T, V) and target ids (B, T) into scores (B, T + 1): one per
    target token, then the sequence score. Target ids < 0 are padding (score 0, not summed)."""

    spec: ScoreSpec

    @property
    def name(self) -> str:
        return self.spec if isinstance(self.spec, str) else "callable"

    def __call__(self, logits: Tensor, targets: Tensor) -> Tensor:
        valid = targets >= 0
        index = targets.clamp_min(0).unsqueeze(-1)
        if self.spec == "logit":
            table = logits
        else:
            table = torch.log_softmax(logits, -1)
            if callable(self.spec):
                table = torch.func.vmap(self.spec)(table)
        token = table.gather(-1, index).squeeze(-1) if table.ndim == 3 else table
        token = torch.where(valid, token, torch.zeros_like(token))
        total = token.sum(1, keepdim=True)
        if self.spec == "prob":  # p(t) per token; the joint probability prod_t p(t)
            token, total = torch.where(valid, token.exp(), token), total.exp()
        return torch.cat([token, total], 1)


def as_score(spec: ScoreSpec, method: str = "fattr.llm.attribute") -> Score:
    """Validate `score=`: one of `SCORES` or a callable (T, V) log-probs -> (T, V) or (T,)."""
    if isinstance(spec, str):
        if spec not in SCORES:
            raise FattrError(f"{method}: unknown score {spec!r}; choose one of "
                             f"{', '.join(SCORES)}, or pass a callable on the (T, V) log-probs.")
    elif not callable(spec):
        raise FattrTypeError(f"{method}: score must be one of {', '.join(SCORES)} or a callable "
                             f"on the (T, V) log-probs, got {type(spec).__name__}.")
    return Score(spec)


def check_callable_score(score: Score, steps: int, vocab: int, dtype: torch.dtype,
                         method: str = "fattr.llm.attribute") -> None:
    """A callable score must map (T, V) log-probs to (T, V) or (T,): checked once on zeros."""
    if not callable(score.spec):
        return
    out = score.spec(torch.zeros(steps, vocab, dtype=dtype))
    if not isinstance(out, Tensor) or tuple(out.shape) not in ((steps, vocab), (steps,)):
        got = tuple(out.shape) if isinstance(out, Tensor) else type(out).__name__
        raise FattrError(f"{method}: a callable score gets the (T, V) = ({steps}, {vocab}) "
                         f"log-probs of the target positions and must return a (T, V) table "
                         f"(the target token's entry is taken) or (T,) scores; got {got}. "
                         "Contrastive example: score=lambda lp: lp - lp[:, [foil_id]].")
