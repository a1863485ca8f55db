"""Attention written out as matmuls, for backward passes batched with `torch.func.vmap`.

The gradient methods of `fattr.llm` take the backward pass of all T target tokens at once, as a
`vmap` over T cotangents. PyTorch's fused CPU attention (`scaled_dot_product_attention`) has no
vmap batching rule for its backward, so torch falls back to a loop over the T slices of that op.
Within `math_attention()`, calls of `F.scaled_dot_product_attention` (how HuggingFace's "sdpa"
attention runs) are computed as softmax(q k^T * scale + mask) v instead, whose backward is
batched matmuls. benchmarks/bench_llm.py measures both; see docs/llm.md.
"""

from __future__ import annotations

import contextlib
import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.overrides import TorchFunctionMode


def attention(query: Tensor, key: Tensor, value: Tensor, attn_mask: Tensor | None = None,
              dropout_p: float = 0.0, is_causal: bool = False, scale: float | None = None,
              enable_gqa: bool = False) -> Tensor:
    """`F.scaled_dot_product_attention` (no dropout) as softmax(q k^T * scale + mask) v.

    Masked scores are set to the dtype's lowest finite value, not -inf, so a query that may
    attend to nothing (a padding row) gets a finite uniform row instead of NaN, and no NaN can
    reach the gradients of the other rows through it.
    """
    if dropout_p:
        raise RuntimeError("fattr.llm: attention dropout is active; call model.eval().")
    scale = 1.0 / math.sqrt(query.shape[-1]) if scale is None else scale
    if enable_gqa and key.shape[-3] != query.shape[-3]:
        repeat = query.shape[-3] // key.shape[-3]
        key, value = key.repeat_interleave(repeat, -3), value.repeat_interleave(repeat, -3)
    scores = (query * scale) @ key.transpose(-2, -1)
    lowest = torch.finfo(scores.dtype).min
    if is_causal:
        allowed = torch.ones(scores.shape[-2:], dtype=torch.bool, device=scores.device).tril()
        scores = scores.masked_fill(~allowed, lowest)
    if attn_mask is not None:
        if attn_mask.dtype == torch.bool:
            scores = scores.masked_fill(~attn_mask, lowest)
        else:
            scores = (scores + attn_mask).clamp_min(lowest)
    return torch.softmax(scores, -1) @ value


class math_attention(TorchFunctionMode):
    """Within this block, `F.scaled_dot_product_attention` runs as `attention` (matmuls)."""

    def __torch_function__(self, func: Any, types: Any, args: tuple = (),
                           kwargs: dict | None = None) -> Any:
        if func is F.scaled_dot_product_attention:
            return attention(*args, **(kwargs or {}))
        return func(*args, **(kwargs or {}))


# How the batched backward passes of the gradient methods run attention (chosen by measurement,
# benchmarks/bench_llm.py and docs/llm.md).
BACKWARD_ATTENTION = contextlib.nullcontext
