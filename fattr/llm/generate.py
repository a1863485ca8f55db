"""Greedy continuation of prompts: the target when `target=None`."""

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
    width = max(p.shape[0] for p in prompts)
    device = next(model.parameters()).device
    ids = torch.full((len(prompts), width), pad, dtype=torch.long)
    mask = torch.zeros_like(ids)
    for b, p in enumerate(prompts):
        ids[b, width - p.shape[0]:], mask[b, width - p.shape[0]:] = p, 1
    ids, mask = ids.to(device), mask.to(device)
    with torch.no_grad():
        if callable(getattr(model, "generate", None)):
            out = model.generate(input_ids=ids, attention_mask=mask, do_sample=False,
                                 max_new_tokens=max_new_tokens, pad_token_id=pad)
        else:
            out = _step_by_step(model, ids, mask, max_new_tokens)
    stop = _stop_ids(model)
    return [_cut(row, stop).cpu() for row in out[:, width:]]


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
