"""Token attributions as HTML: one coloured span per token."""

from __future__ import annotations

import html
from collections.abc import Sequence
from typing import Any

from fattr.errors import FattrError, FattrTypeError
from fattr.viz.normalize import as_tensor, normalize

_POSITIVE = (0, 150, 0)   # green
_NEGATIVE = (200, 0, 0)   # red


def text(tokens: Sequence[str], attribution: Any, sign: str = "all",
         clip_percentile: float = 100.0) -> str:
    """Tokens coloured by their attribution, as an HTML string (display it in Jupyter with
    `IPython.display.HTML`).

    Each token becomes `<span title="value" style="background-color: rgba(...)">token</span>`:
    green for positive, red for negative normalised attribution, opacity |value| (see
    `fattr.viz.normalize`; default clipping at the largest |value|). Tokens are HTML-escaped.

    Args:
        tokens: T strings (e.g. `tokenizer.convert_ids_to_tokens(ids)`).
        attribution: (T,) or (T, D) (embedding attributions are summed over D), optionally
            with a leading batch axis of 1.
        sign: "all", "positive", "negative" or "absolute".
        clip_percentile: values above this percentile of |attribution| saturate (default 100).

    Returns a str.

    >>> html = fattr.viz.text(["the", "movie", "was", "great"], a)
    """
    method = "text"
    if isinstance(tokens, str) or not isinstance(tokens, Sequence):
        raise FattrTypeError(f"{method}: tokens must be a sequence of strings, got "
                             f"{type(tokens).__name__}.")
    bad = [t for t in tokens if not isinstance(t, str)]
    if bad:
        raise FattrTypeError(f"{method}: every token must be a str, got {type(bad[0]).__name__} "
                             f"({bad[0]!r}); convert ids with tokenizer.convert_ids_to_tokens.")
    a = as_tensor(attribution, "attribution", method)
    if a.ndim >= 2 and a.shape[0] == 1 and len(tokens) != 1:  # a batch of one
        a = a[0]
    if a.ndim == 2:
        a = a.sum(1)
    if a.ndim != 1 or a.shape[0] != len(tokens):
        shape = tuple(as_tensor(attribution, "attribution", method).shape)
        raise FattrError(f"{method}: attribution of shape {shape} does not match "
                         f"{len(tokens)} tokens; pass (T,) or (T, D) with T = len(tokens).")
    values = normalize(a, sign, clip_percentile, method=method)
    spans = []
    for token, raw, value in zip(tokens, a.tolist(), values.tolist()):
        r, g, b = _POSITIVE if value >= 0 else _NEGATIVE
        style = f"background-color: rgba({r}, {g}, {b}, {abs(value):.3f}); padding: 0 2px"
        spans.append(f'<span title="{raw:.4g}" style="{style}">{html.escape(token)}</span>')
    return '<div class="fattr-text" style="line-height: 1.8">' + " ".join(spans) + "</div>"
