"""Prompts and targets as token ids, checked, and laid out as one teacher-forced batch.

Example b (prompt of L_b tokens, target of T_b tokens) becomes the row

    [pad] * (L - L_b) + prompt + target[:-1] + [pad] * (T - T_b)       (N = L + T - 1 ids)

with L, T the largest lengths: prompts are padded on the left (as `generate` does), so the T
target tokens are predicted at the last T positions of every row, whatever its lengths. A
sequence classifier has one target (its class) and no continuation; its prompts are padded on
the right (BERT's pooler reads the first position).
"""

from __future__ import annotations

import numbers
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from fattr.errors import FattrError, FattrTypeError


@dataclass(frozen=True)
class Prompt:
    """One prompt: its ids (L,), and its text and tokenizer encoding when given as text."""

    ids: Tensor
    text: str | None = None
    encoding: Any = None


def as_ids(value: Any, vocab: int, what: str, method: str) -> Tensor:
    """A 1-D LongTensor (or list of ints) of token ids in [0, vocab), non-empty."""
    if isinstance(value, Sequence) and not isinstance(value, str) and \
            all(isinstance(i, numbers.Integral) and not isinstance(i, bool) for i in value):
        value = torch.tensor(list(value), dtype=torch.long)
    if not isinstance(value, Tensor):
        raise FattrTypeError(f"{method}: {what} must be a string (with a tokenizer) or a 1-D "
                             f"tensor of token ids, got {type(value).__name__}.")
    if value.is_floating_point() or value.is_complex() or value.dtype == torch.bool:
        raise FattrError(f"{method}: {what} must hold integer token ids, got dtype "
                         f"{value.dtype}.")
    if value.ndim == 2 and value.shape[0] == 1:
        value = value[0]
    if value.ndim != 1:
        raise FattrError(f"{method}: {what} must be a 1-D tensor of token ids (L,), got shape "
                         f"{tuple(value.shape)}; pass several prompts as a list.")
    if value.numel() == 0:
        raise FattrError(f"{method}: the {what} has no tokens; pass at least one token id.")
    low, high = int(value.min()), int(value.max())
    if low < 0 or high >= vocab:
        bad = low if low < 0 else high
        raise FattrError(f"{method}: the {what} holds the token id {bad}, outside the model's "
                         f"vocabulary of {vocab} ids (0..{vocab - 1}). Check that the tokenizer "
                         "belongs to the model.")
    return value.long().cpu()


def encode_prompt(prompt: Any, tokenizer: Any, vocab: int, method: str) -> Prompt:
    if not isinstance(prompt, str):
        return Prompt(as_ids(prompt, vocab, "prompt", method))
    if tokenizer is None:
        raise FattrTypeError(f"{method}: the prompt is a string but tokenizer is None; pass the "
                             "model's tokenizer, or the prompt as a tensor of token ids.")
    if not prompt:
        raise FattrError(f"{method}: the prompt is an empty string; there is nothing to "
                         "attribute to.")
    encoding = None
    if getattr(tokenizer, "is_fast", False):
        encoding = tokenizer(prompt, return_offsets_mapping=True, return_special_tokens_mask=True)
        ids = encoding["input_ids"]
    else:
        ids = tokenizer(prompt)["input_ids"]
    return Prompt(as_ids(list(ids), vocab, "prompt", method), prompt, encoding)


def encode_target(target: Any, tokenizer: Any, vocab: int, method: str) -> Tensor:
    """captum's convention: a string target is encoded without special tokens."""
    if isinstance(target, str):
        if tokenizer is None:
            raise FattrTypeError(f"{method}: the target is a string but tokenizer is None; pass "
                                 "the tokenizer, or the target as a tensor of token ids.")
        target = tokenizer.encode(target, add_special_tokens=False)
        if not target:
            raise FattrError(f"{method}: the target string encodes to no tokens.")
    return as_ids(target, vocab, "target", method)


def is_many(prompt: Any) -> bool:
    """Whether `prompt` is a list of prompts (strings, tensors or lists of ids)."""
    return isinstance(prompt, (list, tuple)) and len(prompt) > 0 and \
        all(isinstance(p, (str, Tensor, list, tuple)) for p in prompt)


def per_prompt(value: Any, count: int, many: bool, what: str, method: str) -> list[Any]:
    """One `value` per prompt: a list of `count` for a list of prompts, else shared."""
    if not many:
        return [value]
    if not isinstance(value, (list, tuple)) or len(value) != count:
        raise FattrError(f"{method}: with a list of {count} prompts, {what} must be None or a "
                         f"list with one {what} per prompt.")
    return list(value)


def pad_id(model: Any, tokenizer: Any) -> int:
    """The id put in padded positions (never attended to): the tokenizer's or the model's pad
    token, else its end-of-sequence token, else 0."""
    config = getattr(model, "generation_config", None) or getattr(model, "config", None)
    for value in (getattr(tokenizer, "pad_token_id", None), getattr(config, "pad_token_id", None),
                  getattr(config, "eos_token_id", None), 0):
        if isinstance(value, (list, tuple)):
            value = value[0] if value else None
        if isinstance(value, numbers.Integral):
            return int(value)
    return 0


def token_strings(ids: Tensor, tokenizer: Any) -> list[str]:
    """Each id decoded on its own (so GPT-2's 'Ġcat' reads ' cat'); str(id) without tokenizer."""
    if tokenizer is None:
        return [str(i) for i in ids.tolist()]
    return [tokenizer.decode([i]) for i in ids.tolist()]


@dataclass(frozen=True)
class Batch:
    """The teacher-forced batch: ids, attention mask and position ids (B, N) (None for one
    unpadded example), targets (B, T) with -1 for padding, and each position's feature (B, N)
    (-1: never perturbed or reported)."""

    ids: Tensor
    targets: Tensor
    groups: Tensor
    mask: Tensor | None
    positions: Tensor | None
    target_lengths: list[int]
    feature_counts: list[int]

    def model_kwargs(self, device: torch.device) -> dict[str, Tensor]:
        """The per-example forward arguments of the `Embedded` and `Masked` models."""
        kwargs = {"groups": self.groups, "targets": self.targets}
        if self.mask is not None:
            kwargs.update(attention_mask=self.mask, position_ids=self.positions)
        return {k: v.to(device) for k, v in kwargs.items()}


def layout(prompts: list[Tensor], targets: list[Tensor], groups: list[Tensor],
           counts: list[int], include_prefix: bool, pad: int, left: bool = True) -> Batch:
    """One padded batch (see the module docstring). With `include_prefix`, the generated prefix
    target[:-1] of each example is attributed too: its tokens are features F_b, F_b + 1, ...
    `left=False` pads on the right, for classifiers (one target, no continuation)."""
    lengths = [p.shape[0] for p in prompts]
    steps = [t.shape[0] for t in targets]
    width, depth = max(lengths), max(steps)
    size = width + depth - 1
    ids = torch.full((len(prompts), size), pad, dtype=torch.long)
    mask = torch.zeros_like(ids)
    group = torch.full_like(ids, -1)
    wanted = torch.full((len(prompts), depth), -1, dtype=torch.long)
    features = []
    for b, (prompt, target, g, count) in enumerate(zip(prompts, targets, groups, counts)):
        start, prefix = width - prompt.shape[0] if left else 0, target.shape[0] - 1
        end = start + prompt.shape[0]
        ids[b, start:end + prefix] = torch.cat([prompt, target[:-1]])
        mask[b, start:end + prefix] = 1
        group[b, start:end] = g
        if include_prefix:
            group[b, end:end + prefix] = count + torch.arange(prefix)
        wanted[b, :target.shape[0]] = target
        features.append(count + prefix if include_prefix else count)
    if len(prompts) == 1:
        return Batch(ids, wanted, group, None, None, steps, features)
    positions = (mask.cumsum(1) - 1).clamp_min(0)
    return Batch(ids, wanted, group, mask, positions, steps, features)
