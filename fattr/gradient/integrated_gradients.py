"""Integrated Gradients (Sundararajan et al. 2017)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from torch import Tensor

from fattr.core.baselines import BaselineSpec, baselines_for
from fattr.core.call import Call, attribution
from fattr.core.chunking import check_batch_size, path_sum
from fattr.core.gradients import input_gradient, scaled
from fattr.core.inputs import tmap
from fattr.core.model import ModelFn, Params, as_model
from fattr.core.paths import line_points
from fattr.core.quadrature import check_rule, quadrature


def integrated_gradients(f: ModelFn, steps: int = 50, method: str = "gausslegendre",
                         batch_size: int | None = None, *,
                         output: Callable[[Any], Tensor] | None = None) -> Callable[..., Tensor]:
    """Path integral of the gradient from a baseline to the input.

        IG(x) = (x - x') * integral_0^1 grad f(x' + a (x - x')) da
              ~ (x - x') * sum_i w_i grad f(x' + a_i (x - x'))

    Args:
        f: model function `f(params, x)`.
        steps: number of quadrature nodes (default 50, as captum).
        method: `gausslegendre` (default, captum's nodes and weights), `riemann_left`,
            `riemann_right`, `riemann_middle` or `riemann_trapezoid`. The trapezoid rule is the
            true one (end weights 1/(2(n-1))); captum's weights sum to (n-1)/n instead.
        batch_size: the most path points per forward call (captum's internal_batch_size);
            None sends all `steps * B` at once. Each chunk builds its own points, so memory
            is bounded by `batch_size`, not by `steps`. Results do not depend on it.
        output: picks a tensor from the model's output.

    Returns `attr(params, x, target=None, baseline=None, *, model_args=(), model_kwargs=None)`
    shaped like x (a tuple for a tuple x); `baseline` is None (zeros), a number, or a tensor
    broadcastable to x (a tuple of them for a tuple x). Completeness,
    `sum(IG) = f(x) - f(x')`, holds up to the quadrature error: see `fattr.completeness_gap`.

    >>> attr = fattr.integrated_gradients(f, steps=32)
    >>> a = attr(params, x, target=labels, baseline=0.0)

    Sundararajan, Taly, Yan, "Axiomatic Attribution for Deep Networks" (2017),
    https://arxiv.org/abs/1703.01365
    """
    check_rule(method, steps, "integrated_gradients")
    check_batch_size(batch_size, "integrated_gradients")
    model = as_model(f, output, "integrated_gradients")

    def compute(params: Params, call: Call, baseline: BaselineSpec = None) -> Tensor:
        xs = call.inputs
        starts = baselines_for(baseline, xs, "integrated_gradients")
        alphas, weights = quadrature(method, steps, xs[0])

        def weighted_gradient(step: Tensor, example: Tensor) -> tuple[Tensor, ...]:
            points = line_points(starts, xs, alphas[step], example)
            gradients, _ = input_gradient(model, params, points, call, example)
            return scaled(gradients, weights[step])

        total = path_sum(weighted_gradient, steps, call.batch, batch_size, xs[0].device)
        return call.unpack(tmap(lambda x, s, g: (x - s) * g, xs, starts, total))

    return attribution(model, compute, batched_kwargs=("baseline",),
                       doc=integrated_gradients.__doc__)
