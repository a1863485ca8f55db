"""Features of a prompt: which tokens are attributed (and perturbed) together.

A prompt of L tokens gets one group id per token: 0..F-1 for the F features in order, -1 for
tokens that are context only (never perturbed, no column in the result). `features=`:
- None: every token is a feature (captum's TextTokenInput).
- "words": the tokens of one word form a feature (a fast tokenizer's `word_ids()`); special
  tokens such as BOS are features of their own.
- a list of (start, end) token spans [start, end): each span is a feature, other tokens are
  context.
- a list of strings whose concatenation is the prompt (template segments, as captum's
  TextTemplateInput): each segment is a feature made of the tokens that start inside it.
"""

from __future__ import annotations

import bisect
import itertools
import numbers
from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor

from fattr.errors import FattrError, FattrTypeError

FeatureSpec = None | str | Sequence[tuple[int, int]] | Sequence[str]


def token_groups(spec: FeatureSpec, ids: Tensor, text: str | None, encoding: Any,
                 method: str) -> tuple[Tensor, int]:
    """(group id of each of the L tokens (L,), number of features F)."""
    length = ids.shape[0]
    if spec is None:
        return torch.arange(length), length
    if isinstance(spec, str):
        if spec != "words":
            raise FattrError(f"{method}: features must be None, 'words', a list of (start, "
                             f"end) token spans or a list of text segments; got {spec!r}.")
        return _words(_encoding(encoding, text, "features='words'", method), length, method)
    if not isinstance(spec, Sequence) or not spec:
        raise FattrTypeError(f"{method}: features must be None, 'words', a non-empty list of "
                             f"(start, end) token spans or of text segments; got {spec!r}.")
    if all(isinstance(s, str) for s in spec):
        enc = _encoding(encoding, text, "text segments", method)
        return _segments(list(spec), text, enc, length, method)
    return _spans(spec, length, method)


def _encoding(encoding: Any, text: str | None, what: str, method: str) -> Any:
    if text is None or encoding is None:
        raise FattrError(f"{method}: {what} need the prompt as text and a fast HuggingFace "
                         "tokenizer (one with offset mappings); pass the prompt as a string, or "
                         "give features as (start, end) token spans.")
    return encoding


def _words(encoding: Any, length: int, method: str) -> tuple[Tensor, int]:
    """Consecutive tokens of one word form a feature; special tokens (no word) one each."""
    groups, previous, count = [], None, -1
    for word in encoding.word_ids()[:length]:
        if word is None or word != previous:
            count += 1
        groups.append(count)
        previous = word
    return torch.tensor(groups), count + 1


def _spans(spans: Sequence[Any], length: int, method: str) -> tuple[Tensor, int]:
    groups = torch.full((length,), -1)
    for k, span in enumerate(spans):
        if not (isinstance(span, (tuple, list)) and len(span) == 2
                and all(isinstance(i, numbers.Integral) for i in span)):
            raise FattrError(f"{method}: feature {k} is {span!r}; a token span is a pair of "
                             "ints (start, end), end exclusive.")
        start, end = int(span[0]), int(span[1])
        if not 0 <= start < end <= length:
            raise FattrError(f"{method}: feature span {span!r} is empty or outside the prompt "
                             f"of {length} tokens; spans need 0 <= start < end <= {length}.")
        if (groups[start:end] >= 0).any():
            raise FattrError(f"{method}: feature span {span!r} overlaps an earlier span; every "
                             "token belongs to at most one feature.")
        groups[start:end] = k
    return groups, len(spans)


def _segments(segments: list[str], text: str, encoding: Any, length: int,
              method: str) -> tuple[Tensor, int]:
    if "".join(segments) != text:
        raise FattrError(f"{method}: the text segments {segments!r} must concatenate to the "
                         f"prompt {text!r}.")
    ends = list(itertools.accumulate(len(s) for s in segments))
    special = encoding["special_tokens_mask"]
    groups = [-1 if special[i] else bisect.bisect_right(ends, encoding["offset_mapping"][i][0])
              for i in range(length)]
    empty = sorted(set(range(len(segments))) - set(groups))
    if empty:
        raise FattrError(f"{method}: the text segment {segments[empty[0]]!r} holds no token of "
                         "its own; merge it with a neighbour.")
    return torch.tensor(groups), len(segments)
