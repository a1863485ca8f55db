"""Layer Integrated Gradients: IG in the space of a layer's output."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from torch import Tensor

from fattr.core.baselines import BaselineSpec, baselines_for
from fattr.core.call import Call, attribution
from fattr.core.chunking import path_sum
from fattr.core.gradients import scaled
from fattr.core.inputs import rows_of, tmap
from fattr.core.model import ModelFn, Params
from fattr.core.paths import line_points
from fattr.core.quadrature import quadrature
from fattr.layers.paths import path_method
from fattr.layers.taps import LayerSpec, empty_layer_output


def layer_integrated_gradients(f: ModelFn, layer: LayerSpec, steps: int = 50,
                               method: str = "gausslegendre", batch_size: int | None = None,
                               *, attribute_to_input: bool = False,
                               output: Callable[[Any], Tensor] | None = None,
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
        attribute_to_input: attribute to the layer's positional inputs instead of its output
            (captum's attribute_to_layer_input; default False). A layer that returns (or takes)
            several tensors gives a tuple of attributions, one per tensor.
        output: picks a tensor from the model's output.

    Returns `attr(params, x, target=None, baseline=None)` shaped like the layer output (B, ...).
    Completeness: the sum over the layer is f(x) - f(x') up to the quadrature error.

    >>> lig = fattr.layer_integrated_gradients(f, "embeddings.word_embeddings")
    >>> a = lig(params, token_ids, target=1, baseline=pad_ids)

    Sundararajan, Taly, Yan, "Axiomatic Attribution for Deep Networks" (2017),
    https://arxiv.org/abs/1703.01365
    """
    name = "layer_integrated_gradients"
    model, tap = path_method(f, layer, steps, method, batch_size, output, name,
                             attribute_to_input)

    def compute(params: Params, call: Call, baseline: BaselineSpec = None) -> Any:
        xs = call.inputs
        starts = baselines_for(baseline, xs, name)
        ends, begins = tap.read(params, call, xs), tap.read(params, call, starts)
        alphas, weights = quadrature(method, steps, ends[0])

        def weighted_gradient(step: Tensor, example: Tensor) -> tuple[Tensor, ...]:
            at = line_points(begins, ends, alphas[step], example)
            tapped = tap.gradients(params, call, rows_of(xs, example), example, at=at)
            return scaled(tapped.gradients, weights[step])

        total = path_sum(weighted_gradient, steps, call.batch, batch_size, ends[0].device)
        return tap.pack(tmap(lambda e, b, g: (e - b) * g, ends, begins, total))

    return attribution(model, compute, gradient=False, empty=empty_layer_output(tap),
                       batched_kwargs=("baseline",), doc=layer_integrated_gradients.__doc__)
