"""Layer Integrated Gradients: IG in the space of a layer's output."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from torch import Tensor

from fattr.core.baselines import BaselineSpec, baseline_like
from fattr.core.model import Call, ModelFn, Params, attribution
from fattr.core.paths import straight_path
from fattr.core.quadrature import quadrature
from fattr.layers.paths import layer_gradient_sum, path_method
from fattr.layers.taps import LayerSpec, empty_layer_output


def layer_integrated_gradients(f: ModelFn, layer: LayerSpec, steps: int = 50,
                               method: str = "gausslegendre", batch_size: int | None = None,
                               *, output: Callable[[Any], Tensor] | None = None,
                               ) -> Callable[..., Tensor]:
    """Integrated Gradients along the straight line between two outputs of a layer.

        a = layer(x), a' = layer(x'),  LIG = (a - a') * sum_i w_i dy_t/da at a' + alpha_i (a - a')

    The model runs on x with the layer's output replaced by each path point (as captum's
    LayerIntegratedGradients). The baseline is an INPUT baseline: for a text model tapped at its
    embedding, `x` and `baseline` are token ids and the path runs between their embeddings.

    Args:
        f: a model function from `fattr.functional` (or `per_example` of one).
        layer: the dotted name from `model.named_modules()`, or the submodule.
        steps, method: the quadrature rule, as `fattr.integrated_gradients` (default 50 steps,
            gausslegendre, captum's nodes and weights).
        batch_size: the most path points per forward call; None sends all at once.
        output: picks a tensor from the model's output.

    Returns `attr(params, x, target=None, baseline=None)` shaped like the layer output (B, ...).
    Completeness: the sum over the layer is f(x) - f(x') up to the quadrature error.

    >>> lig = fattr.layer_integrated_gradients(f, "embeddings.word_embeddings")
    >>> a = lig(params, token_ids, target=1, baseline=pad_ids)

    Sundararajan, Taly, Yan, "Axiomatic Attribution for Deep Networks" (2017),
    https://arxiv.org/abs/1703.01365
    """
    name = "layer_integrated_gradients"
    model, tap = path_method(f, layer, steps, method, batch_size, output, name)

    def compute(params: Params, call: Call, baseline: BaselineSpec = None) -> Tensor:
        x = call.x
        start = baseline_like(baseline, x, name)
        end, begin = tap.read(params, x)[0], tap.read(params, start)[0]
        alphas, weights = quadrature(method, steps, end)
        points = straight_path(begin, end, alphas)
        path_sum = layer_gradient_sum(tap, params, x, call.target, weights, batch_size,
                                      layer_points=points)
        return (end - begin) * path_sum

    return attribution(model, compute, gradient=False, empty=empty_layer_output(tap),
                       batched_kwargs=("baseline",), doc=layer_integrated_gradients.__doc__)
