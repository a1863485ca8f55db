"""`TextAttribution`: what `fattr.llm.attribute` returns for one prompt."""

from __future__ import annotations

import html
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from fattr.viz.normalize import normalize

_POSITIVE, _NEGATIVE = (0, 150, 0), (200, 0, 0)  # fattr.viz.text's colours


@dataclass(frozen=True)
class TextAttribution:
    """Attributions of T target tokens to F prompt features.

    Attributes:
        token_attr: (T, F), row t: how much each feature contributed to the score of target
            token t (its log-prob by default).
        seq_attr: (F,), the attribution of the sequence score (the joint log-prob: for methods
            linear in the score, the sum of the rows of token_attr).
        input_tokens: F strings, one per feature (a token, a word or a segment).
        output_tokens: T strings, the target tokens.
        method, score: what was computed.
    """

    token_attr: Tensor
    seq_attr: Tensor
    input_tokens: list[str]
    output_tokens: list[str]
    method: str = ""
    score: str = "log_prob"

    def to_html(self) -> str:
        """A table: one row per target token (and one for the sequence), one cell per input
        feature, green for positive and red for negative attribution on one scale for the
        whole table. Tokens are HTML-escaped. Display with `IPython.display.HTML`."""
        table = torch.cat([self.token_attr, self.seq_attr[None]]).detach().double().cpu()
        shade = normalize(table, "all", 100.0, method="TextAttribution.to_html") \
            if table.numel() else table
        head = "".join(f"<th>{html.escape(t)}</th>" for t in self.input_tokens)
        body = []
        labels = [*self.output_tokens, "(sequence)"]
        for label, raw, colour in zip(labels, table.tolist(), shade.tolist()):
            cells = "".join(_cell(v, c) for v, c in zip(raw, colour))
            body.append(f"<tr><th>{html.escape(label)}</th>{cells}</tr>")
        caption = html.escape(f"{self.method}, score: {self.score}")
        return (f'<table class="fattr-llm"><caption>{caption}</caption><tr><th></th>{head}</tr>'
                + "".join(body) + "</table>")

    def plot(self, ax: Any = None) -> Any:
        """A matplotlib heatmap of token_attr (rows: target tokens, columns: input features)
        with a symmetric red-white-green scale; returns the Figure."""
        import matplotlib.pyplot as plt
        from matplotlib.colors import LinearSegmentedColormap

        data = self.token_attr.detach().double().cpu().numpy()
        if ax is None:
            width = max(4.0, 0.55 * data.shape[1] + 2)
            _, ax = plt.subplots(figsize=(width, max(2.5, 0.4 * data.shape[0] + 1.5)))
        scale = float(abs(data).max()) or 1.0
        cmap = LinearSegmentedColormap.from_list("fattr_rwg", ["#c80000", "white", "#009600"])
        image = ax.imshow(data, cmap=cmap, vmin=-scale, vmax=scale, aspect="auto")
        ax.set_xticks(range(data.shape[1]), [repr(t)[1:-1] for t in self.input_tokens],
                      rotation=60, ha="right", fontsize=8)
        ax.set_yticks(range(data.shape[0]), [repr(t)[1:-1] for t in self.output_tokens],
                      fontsize=8)
        ax.set_xlabel("input feature")
        ax.set_ylabel("target token")
        ax.set_title(f"{self.method} ({self.score})", fontsize=9)
        ax.figure.colorbar(image, ax=ax, fraction=0.04)
        ax.figure.tight_layout()
        return ax.figure


def _cell(value: float, colour: float) -> str:
    r, g, b = _POSITIVE if colour >= 0 else _NEGATIVE
    return (f'<td title="{value:.4g}" style="background-color: rgba({r}, {g}, {b}, '
            f'{abs(colour):.3f})">{value:.3f}</td>')
