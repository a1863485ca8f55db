"""Occlusion (Zeiler and Fergus 2014): slide a baseline-filled window over the input."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import Tensor

from fattr.core.baselines import BaselineSpec
from fattr.core.call import Call, attribution
from fattr.core.chunking import check_batch_size
from fattr.core.inputs import per_input
from fattr.core.model import ModelFn, Params, as_model
from fattr.errors import FattrError
from fattr.perturbation.engine import Removed, as_result, empty_result, game_of

Size = int | Sequence[int]


def _sizes(value: Size, name: str, length: int | None) -> tuple[int, ...]:
    sizes = (value,) if isinstance(value, int) and not isinstance(value, bool) else value
    if not isinstance(sizes, Sequence) or not sizes or any(
            isinstance(s, bool) or not isinstance(s, int) or s < 1 for s in sizes):
        raise FattrError(f"occlusion: {name} must be a positive int or a tuple of positive ints "
                         f"(one per axis after the batch axis), got {value!r}.")
    if length is not None and len(sizes) not in (1, length):
        raise FattrError(f"occlusion: stride {value!r} has {len(sizes)} entries but the window "
                         f"has {length}; pass one stride per window axis, or one int for all.")
    return tuple(sizes) * (length if length is not None and len(sizes) == 1 else 1)


def _one_size(value: object) -> bool:
    """A window or stride for one input: an int, None, or a tuple of ints."""
    return not (isinstance(value, tuple) and value and
                all(isinstance(v, (tuple, list)) or v is None for v in value))


def window_masks(window: tuple[int, ...], stride: tuple[int, ...], x: Tensor,
                 which: int | None = None) -> list[Tensor]:
    """Per axis, which elements each window position covers: (positions, size) bool.

    Positions start at 0, stride, 2*stride, ... up to ceil((size - window) / stride) * stride,
    so a last window that does not fit is cut at the border (captum's placement).
    """
    shape = tuple(x.shape[1:])
    name = "x" if which is None else f"x[{which}]"
    if len(window) != len(shape):
        raise FattrError(
            f"occlusion: window {window} has {len(window)} axes but {name} of shape "
            f"{tuple(x.shape)} "
            f"has {len(shape)} after the batch axis. The window excludes the batch axis: for "
            f"images (C, H, W) pass e.g. ({shape[0]}, 8, 8).")
    if any(w > size for w, size in zip(window, shape)):
        raise FattrError(f"occlusion: window {window} is larger than the input {shape} (x's "
                         "shape after the batch axis) along some axis.")
    if any(s > w and w < size for s, w, size in zip(stride, window, shape)):
        raise FattrError(f"occlusion: stride {stride} is larger than window {window} along an "
                         f"axis the window does not cover entirely (input {shape}), so some "
                         "elements would never be occluded. Use a stride <= the window.")
    masks = []
    for w, s, size in zip(window, stride, shape):
        starts = torch.arange(math.ceil((size - w) / s) + 1, device=x.device) * s
        element = torch.arange(size, device=x.device)
        masks.append((element >= starts[:, None]) & (element < starts[:, None] + w))
    return masks


def windows(masks: list[Tensor], which: int, inputs: tuple[Tensor, ...]) -> Removed:
    """Mask generator for plans of window positions (P, axes) of input `which`: the box
    covered at each, as flat masks over the elements of all inputs."""
    before = sum(x.shape[1:].numel() for x in inputs[:which])
    after = sum(x.shape[1:].numel() for x in inputs[which + 1:])

    def removed(rows: Tensor, example: Tensor) -> Tensor:
        covered = rows.new_ones((rows.shape[0],) + (1,) * len(masks), dtype=torch.bool)
        for axis, mask in enumerate(masks):
            shape = [rows.shape[0]] + [1] * len(masks)
            shape[axis + 1] = mask.shape[1]
            covered = covered & mask[rows[:, axis]].reshape(shape)
        covered = covered.reshape(rows.shape[0], -1)
        if not before and not after:
            return covered
        pad = lambda n: covered.new_zeros((rows.shape[0], n))
        return torch.cat([pad(before), covered, pad(after)], 1)

    return removed


def spread(drops: Tensor, masks: list[Tensor]) -> Tensor:
    """The mean over covering windows: drops (B, *positions) -> (B, *x.shape[1:]). Box windows
    factor per axis, so this is one contraction with each axis's (positions, size) mask."""
    total, coverage = drops, torch.ones_like(drops[:1])
    for mask in masks:
        total = torch.tensordot(total, mask.to(drops.dtype), dims=([1], [0]))
        coverage = torch.tensordot(coverage, mask.to(drops.dtype), dims=([1], [0]))
    return total / coverage


def occlusion(f: ModelFn, window: Size, stride: Size | None = None,
              batch_size: int | None = None, *, output: Callable[[Any], Tensor] | None = None,
              ) -> Callable[..., Tensor]:
    """Average output drop over every window position that covers an element.

        occ(x)_e = (1 / |P(e)|) * sum_{p in P(e)} (f(x) - f(x with window p set to the baseline))

    where P(e) are the window positions covering element e. Windows start at 0 and move by
    `stride` along every axis after the batch axis; a last window that does not fit is cut at
    the border (as captum).

    Args:
        f: model function `f(params, x)`.
        window: the window's size along every axis after the batch axis, e.g. (3, 8, 8) for
            (B, 3, H, W) images (captum's sliding_window_shapes). An int is a 1-axis window.
            For a tuple x, a tuple with one window per input: each input is occluded on its
            own while the others stay as they are (as captum).
        stride: the step along each window axis (an int for all); None (default) steps by 1,
            as captum; for a tuple x, one per input. A stride may not exceed the window unless
            the window spans that axis.
        batch_size: the most model inputs per forward call, mixed across examples and window
            positions (captum's perturbations_per_eval counts whole batches instead); None
            (default) picks a chunk from the input size (about 2**19 input elements per call on
            the CPU, 2**24 on a GPU; `fattr.core.chunking.default_batch_size`). The result does
            not depend on it.
        output: picks a tensor from the model's output.

    Returns `attr(params, x, target=None, *, baseline=None) -> Tensor` shaped like x;
    `baseline` is None (zeros), a number, or a tensor broadcastable to x. Forward-only: x may be
    an integer tensor (token ids with a baseline id); the result then has the model output's
    dtype. Differentiable in params (and in x and the baseline) and works under
    `torch.func.vmap` over targets.

    >>> attr = fattr.occlusion(f, window=(3, 8, 8), stride=(3, 4, 4), batch_size=256)
    >>> a = attr(params, x, target=labels)

    Zeiler, Fergus, "Visualizing and Understanding Convolutional Networks" (2014),
    https://arxiv.org/abs/1311.2901
    """
    given = (window,) if _one_size(window) else window  # fail early on a bad size
    for w, st in zip(given, (stride,) * len(given) if _one_size(stride) else stride):
        size = _sizes(w, "window", None)
        if st is not None:
            _sizes(st, "stride", len(size))
    check_batch_size(batch_size, "occlusion")
    model = as_model(f, output, "occlusion")

    def compute(params: Params, call: Call, baseline: BaselineSpec | tuple = None) -> Any:
        windows_of = per_input(window, len(call.inputs), "window", "occlusion", atom=_one_size)
        strides_of = per_input(stride, len(call.inputs), "stride", "occlusion", atom=_one_size)
        game = game_of(model, params, call, batch_size, baseline, None)
        full = game.full()
        results = []
        for i, (w, st) in enumerate(zip(windows_of, strides_of)):  # inputs one at a time
            w = _sizes(w, "window", None)
            st = (1,) * len(w) if st is None else _sizes(st, "stride", len(w))
            masks = window_masks(w, st, call.inputs[i], i if len(call.inputs) > 1 else None)
            counts = [m.shape[0] for m in masks]
            grid = torch.meshgrid(*(torch.arange(n, device=game.device) for n in counts),
                                  indexing="ij")
            positions = torch.stack(grid, -1).reshape(-1, len(counts))
            drops = (full - game.scores(positions, windows(masks, i, call.inputs))).T
            results.append(spread(drops.reshape(-1, *counts), masks))
        return call.unpack(as_result(tuple(results), call.inputs))

    return attribution(model, compute, gradient=False, empty=empty_result,
                       batched_kwargs=("baseline",), doc=occlusion.__doc__)
