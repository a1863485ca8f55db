"""What is explained: the given target of each prompt as token ids, or its greedy
continuation; for a sequence classifier, a class (a given id or label, or the predicted one)."""

from __future__ import annotations

import numbers
from typing import Any

import torch
from torch import Tensor, nn

from fattr.errors import FattrError
from fattr.llm.generate import class_logits, greedy
from fattr.llm.inputs import encode_target, per_prompt


def targets_for(model: nn.Module, tokenizer: Any, prompts: list[Tensor], target: Any,
                many: bool, vocab: int, max_new_tokens: int, pad: int, method: str,
                ) -> tuple[list[Tensor], int | None]:
    """(one target (T_b,) per prompt, the number of classes for a classifier else None)."""
    logits = class_logits(model, prompts, pad)
    if logits is not None:
        return _classes(model, logits, target, many, method), logits.shape[1]
    if target is None:
        return greedy(model, prompts, max_new_tokens, pad), None
    given = per_prompt(target, len(prompts), many, "target", method)
    return [encode_target(t, tokenizer, vocab, method) for t in given], None


def _classes(model: nn.Module, logits: Tensor, target: Any, many: bool,
             method: str) -> list[Tensor]:
    if target is None:
        return [c[None].cpu() for c in logits.argmax(1)]
    label2id = getattr(getattr(model, "config", None), "label2id", None) or {}
    count = logits.shape[1]
    classes = []
    for t in per_prompt(target, logits.shape[0], many, "target", method):
        if isinstance(t, str) and t in label2id:
            t = label2id[t]
        if isinstance(t, Tensor) and t.numel() == 1 and not t.is_floating_point():
            t = int(t)
        if isinstance(t, bool) or not isinstance(t, numbers.Integral) or not 0 <= t < count:
            raise FattrError(f"{method}: the model is a classifier of {count} classes; target "
                             f"must be a class id in 0..{count - 1}, one of its labels "
                             f"{sorted(label2id)} or None (the predicted class), got {t!r}.")
        classes.append(torch.tensor([int(t)]))
    return classes


def labels(model: nn.Module, ids: Tensor) -> list[str]:
    """A classifier's label of each class id (`config.id2label`)."""
    id2label = getattr(getattr(model, "config", None), "id2label", None) or {}
    return [str(id2label.get(i, i)) for i in ids.tolist()]
