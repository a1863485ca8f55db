"""What is explained when `target=None`: the greedy continuation of each prompt, or, for a
sequence classifier (logits (B, C)), its predicted class."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from fattr.llm.model import accepts, logits_of


def _stop_ids(model: nn.Module) -> set[int]:
    config = getattr(model, "generation_config", None) or getattr(model, "config", None)
    eos = getattr(config, "eos_token_id", None)
    if eos is None:
        return set()
    return {int(e) for e in (eos if isinstance(eos, (list, tuple)) else [eos])}


def _cut(row: Tensor, stop: set[int]) -> Tensor:
    """The generated ids up to and including the first end-of-sequence id."""
    ends = [i for i, token in enumerate(row.tolist()) if token in stop]
    return row[:ends[0] + 1] if ends else row


def greedy(model: nn.Module, prompts: list[Tensor], max_new_tokens: int, pad: int,
           ) -> list[Tensor]:
    """The greedy continuation of each prompt, as `model.generate(do_sample=False,
    max_new_tokens=...)` gives it (prompts batched with left padding and an attention mask,
    each continuation cut after its first end-of-sequence token). Models without `generate`
    are run step by step on the whole sequence."""
    ids, mask = left_padded(model, prompts, pad)
    width = ids.shape[1]
    with torch.no_grad():
        if callable(getattr(model, "generate", None)):
            out = model.generate(input_ids=ids, attention_mask=mask, do_sample=False,
                                 max_new_tokens=max_new_tokens, pad_token_id=pad)
        else:
            out = _step_by_step(model, ids, mask, max_new_tokens)
    stop = _stop_ids(model)
    return [_cut(row, stop).cpu() for row in out[:, width:]]


def left_padded(model: nn.Module, prompts: list[Tensor], pad: int, left: bool = True,
                ) -> tuple[Tensor, Tensor]:
    """(ids, attention mask), (B, L), prompts padded on the left (or the right), on the
    model's device."""
    width = max(p.shape[0] for p in prompts)
    ids = torch.full((len(prompts), width), pad, dtype=torch.long)
    mask = torch.zeros_like(ids)
    for b, p in enumerate(prompts):
        where = slice(width - p.shape[0], None) if left else slice(0, p.shape[0])
        ids[b, where], mask[b, where] = p, 1
    device = next(model.parameters()).device
    return ids.to(device), mask.to(device)


def class_logits(model: nn.Module, prompts: list[Tensor], pad: int) -> Tensor | None:
    """The logits (B, C) of a sequence classifier (a BERT-style model that cannot generate and
    returns one row of logits per prompt), or None for a language model. Prompts are padded
    on the right, as BERT's pooler reads the first position."""
    can_generate = getattr(model, "can_generate", None)
    if callable(can_generate) and can_generate():
        return None
    ids, mask = left_padded(model, prompts, pad, left=False)
    kwargs = {}
    if len(prompts) > 1 and accepts(model, "attention_mask"):
        kwargs["attention_mask"] = mask
    if len(prompts) > 1 and accepts(model, "position_ids"):
        kwargs["position_ids"] = (mask.cumsum(1) - 1).clamp_min(0)
    with torch.no_grad():
        logits = logits_of(model(input_ids=ids, **kwargs))
    return logits if logits.ndim == 2 else None


def _step_by_step(model: nn.Module, ids: Tensor, mask: Tensor, steps: int) -> Tensor:
    padded = ids.shape[0] > 1
    for _ in range(steps):
        kwargs = {}
        if padded and accepts(model, "attention_mask"):
            kwargs["attention_mask"] = mask
        if padded and accepts(model, "position_ids"):
            kwargs["position_ids"] = (mask.cumsum(1) - 1).clamp_min(0)
        token = logits_of(model(ids, **kwargs))[:, -1].argmax(-1, keepdim=True)
        ids, mask = torch.cat([ids, token], 1), torch.cat([mask, torch.ones_like(token)], 1)
    return ids
