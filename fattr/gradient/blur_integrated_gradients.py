"""Blur Integrated Gradients (Xu et al. 2020)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor

from fattr.core.blur import blur_stack
from fattr.core.call import Call, attribution
from fattr.core.chunking import check_batch_size, path_sum
from fattr.core.gradients import input_gradient
from fattr.core.inputs import tmap
from fattr.core.model import ModelFn, Params, as_model
from fattr.errors import FattrError


def blur_integrated_gradients(f: ModelFn, steps: int = 100, max_sigma: float = 50.0,
                              grad_step: float = 0.01, batch_size: int | None = None, *,
                              sqrt: bool = False,
                              output: Callable[[Any], Tensor] | None = None,
                              ) -> Callable[..., Tensor]:
    """Integrated gradients along a path of ever stronger Gaussian blur of the image.

        sigma_i = i * max_sigma / steps,   x_i = blur(x, sigma_i)
        BlurIG(x) = - sum_i (sigma_{i+1} - sigma_i) * dx_i/dsigma * grad f(x_i)
        dx_i/dsigma ~ (blur(x, sigma_i + grad_step) - x_i) / grad_step

    The blur is over the two last (spatial) axes of an NCHW image only, with zero padding and
    the kernel truncated at 4 sigma (scipy's `gaussian_filter(mode="constant")`, as PAIR).

    Args:
        f: model function.
        steps: path steps (PAIR default 100).
        max_sigma: the strongest blur (default 50).
        grad_step: finite-difference step in sigma (default 0.01).
        batch_size: the most path points per forward call.
        sqrt: space the sigmas as sqrt(i * max_sigma / steps) (PAIR's option).

    Returns `attr(params, x, target=None)` shaped like x (B, C, H, W); for a tuple of images,
    a tuple (each input is blurred on its own).

    Xu, Venugopalan, Sundararajan, "Attribution in Scale and Space" (2020),
    https://arxiv.org/abs/2004.03383
    """
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
        raise FattrError(f"blur_integrated_gradients: steps must be a positive int, got {steps!r}.")
    if not max_sigma > 0 or not grad_step > 0:
        raise FattrError("blur_integrated_gradients: max_sigma and grad_step must be > 0, got "
                         f"{max_sigma!r} and {grad_step!r}.")
    check_batch_size(batch_size, "blur_integrated_gradients")
    model = as_model(f, output, "blur_integrated_gradients")
    sigmas = torch.arange(steps + 1, dtype=torch.float64) * max_sigma / steps
    sigmas = sigmas.sqrt() if sqrt else sigmas
    step_sizes = sigmas[1:] - sigmas[:-1]

    def compute(params: Params, call: Call) -> Tensor:
        for i, x in enumerate(call.inputs):
            if x.ndim != 4:
                which = "x" if call.single else f"x[{i}]"
                raise FattrError(f"blur_integrated_gradients: {which} must be a batch of images "
                                 f"(B, C, H, W), got shape {tuple(x.shape)}.")
        at = sigmas[:-1].to(call.first.device)
        scale = (step_sizes / grad_step).to(call.first)
        stacks = tuple(blur_stack(x, torch.cat([at, at + grad_step])) for x in call.inputs)
        points = tuple(both[:steps] for both in stacks)
        velocity = tuple((both[steps:] - both[:steps]) * scale.view(-1, 1, 1, 1, 1)
                         for both in stacks)

        def blurred_gradient(step: Tensor, example: Tensor) -> tuple[Tensor, ...]:
            rows = tuple(p[step, example] for p in points)
            gradients, _ = input_gradient(model, params, rows, call, example)
            return tmap(lambda g, v: -g * v[step, example], gradients, velocity)

        return call.unpack(path_sum(blurred_gradient, steps, call.batch, batch_size,
                                    call.first.device))

    return attribution(model, compute, doc=blur_integrated_gradients.__doc__)
