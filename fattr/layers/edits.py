"""Scores of a model whose tapped layer output is edited, many edits per example: the loop
under AblationCAM and layer feature ablation.

Each row is (example, edit); its value is the target score of the example with the layer's
recorded output replaced by the edit (`Tap.replayed`: the layer is not computed again). In a
plain eager call the layers BEFORE the tapped one also run only once per example and chunk:
the model runs on that example's one row of inputs, and the replayed output carries all the
chunk's edited rows, so what follows the layer sees them as a batch and what comes before it
broadcasts. A model that needs the input's batch size after the layer fails a two-row check
(or raises) and takes the general path, as do calls with per-example model arguments, under a
torch.func transform or while torch.compile traces.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor
from torch._functorch.pyfunctorch import retrieve_all_functorch_interpreters

from fattr.core.call import Call
from fattr.core.chunking import chunked
from fattr.core.inputs import rows_of
from fattr.core.model import Params
from fattr.errors import FattrError
from fattr.layers.taps import Tap

Edit = Callable[[Tensor, Tensor], Tensor]  # (items, examples) of the rows -> their layer outputs


def edited_scores(tap: Tap, params: Params, call: Call, recorded: Tensor, scores: Tensor,
                  edit: Edit, items: int, batch_size: int | None) -> Tensor:
    """(B, items): the target score of example b with the tapped layer's output replaced by
    `edit(item, example)` (one row per (item, example) pair), `batch_size` rows per forward
    call. `recorded` (B, ...) is the layer's output and `scores` (B,) the unedited target
    scores, for the check that allows computing the layers before the tap once."""
    once = _prefix_once(tap, params, call, recorded, scores, edit, items, batch_size)
    if once is not None:
        return once
    example = torch.arange(call.batch, device=scores.device).repeat_interleave(items)
    item = torch.arange(items, device=scores.device).repeat(call.batch)

    def chunk(ex: Tensor, it: Tensor) -> Tensor:
        out = tap.replayed(params, call, rows_of(call.inputs, ex), ex, [edit(it, ex)])
        return call.target.select(out, ex)

    return chunked(chunk, example, item, batch_size=batch_size).reshape(call.batch, items)


def _prefix_once(tap: Tap, params: Params, call: Call, recorded: Tensor, scores: Tensor,
                 edit: Edit, items: int, batch_size: int | None) -> Tensor | None:
    """`edited_scores` with the layers before the tap run on one row per example and chunk;
    None where that is not allowed or the model fails the check."""
    if torch.compiler.is_compiling() or call.extras.any_per_example or \
            retrieve_all_functorch_interpreters():  # (the functorch query cannot be traced)
        return None
    device = scores.device

    def chunk(example: Tensor, rows: Tensor, one: tuple[Tensor, ...]) -> Tensor:
        out = tap.replayed(params, call, one, example[:1], [rows])
        return call.target.select(out, example)

    first = torch.zeros(2, dtype=torch.long, device=device)
    try:
        check = chunk(first, recorded[first], rows_of(call.inputs, first[:1]))
    except (RuntimeError, IndexError, ValueError, FattrError):
        return None
    scale = 1e-6 * (1 + float(scores[0].abs()))
    if check.shape != (2,) or not torch.allclose(check, scores[:1].expand(2), rtol=1e-4,
                                                 atol=scale):
        return None
    per_example = []
    for b in range(call.batch):
        example = torch.full((1,), b, dtype=torch.long, device=device)
        one = rows_of(call.inputs, example)
        per_example.append(chunked(
            lambda it, example=example, one=one: chunk(
                example.expand(it.shape[0]), edit(it, example.expand(it.shape[0])), one),
            torch.arange(items, device=device), batch_size=batch_size))
    return torch.stack(per_example)
