"""Layer feature ablation: the output drop when a group of a layer's neurons is ablated."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor

from fattr.core.baselines import BaselineSpec, baseline_like
from fattr.core.call import Call, attribution
from fattr.core.checks import check_broadcasts
from fattr.core.chunking import check_batch_size
from fattr.core.model import ModelFn, Params
from fattr.errors import FattrError
from fattr.layers.edits import edited_scores
from fattr.layers.paths import layer_tap
from fattr.layers.taps import LayerSpec, Tap, empty_layer_output
from fattr.perturbation.engine import as_result, full_scores, single_feature
from fattr.perturbation.features import Features, feature_groups


def _check_fits(value: object, arg: str, shape: torch.Size, tap: Tap) -> None:
    """A per-call tensor must broadcast to the layer output (said in the layer's terms)."""
    if isinstance(value, Tensor):
        check_broadcasts(value, shape, arg, tap.method, f"the output of layer {tap.names[0]!r},",
                         f"Pass one per example {tuple(shape)}, one shared {tuple(shape[1:])}, "
                         "or any shape that broadcasts, such as (1, C, 1, 1) for whole channels "
                         "of a conv layer.")


def _check_mask(layer_mask: object, method: str) -> None:
    if layer_mask is None:
        return
    if not isinstance(layer_mask, Tensor) or layer_mask.is_floating_point() or \
            layer_mask.is_complex() or layer_mask.dtype == torch.bool:
        got = layer_mask.dtype if isinstance(layer_mask, Tensor) else type(layer_mask).__name__
        raise FattrError(f"{method}: layer_mask must be an integer tensor of group ids (one per "
                         f"neuron of the layer output, broadcastable to it), got {got}.")


def ablated_scores(tap: Tap, params: Params, call: Call, features: Features, fill: Tensor,
                   full: Tensor, batch_size: int | None) -> Tensor:
    """Target score with each neuron group of the layer set to `fill`, shape (F, B).

    Rows are (example, group) pairs, `batch_size` of them per forward; each runs the model with
    the layer's recorded output, edited, in place of the layer (`fattr.layers.edits`: the layer
    is not computed again, and the layers before it run once per example and chunk where the
    model allows). `full` (B,) are the unablated scores."""
    removed = single_feature(features)
    recorded = tap.one(tap.read(params, call, call.inputs))

    def edit(g: Tensor, b: Tensor) -> Tensor:
        return torch.where(removed(g, b).reshape(-1, *recorded.shape[1:]), fill[b], recorded[b])

    return edited_scores(tap, params, call, recorded, full, edit, features.count, batch_size).T


def layer_feature_ablation(f: ModelFn, layer: LayerSpec, batch_size: int | None = None, *,
                           attribute_to_input: bool = False,
                           output: Callable[[Any], Tensor] | None = None,
                           ) -> Callable[..., Tensor]:
    """Drop in the target score when a neuron's group of the layer output is ablated.

        abl(x)_n = f(x) - f(x with the layer's neurons in group(n) set to the baseline)

    (captum's LayerFeatureAblation on the layer's output.) The model runs with the layer's
    recorded output edited in its place (the layer is not computed again); rows of (example,
    group) pairs are sent `batch_size` at a time, and in a plain eager call the layers before
    the tapped one run once per example and chunk (`fattr.layers.edits`).

    Args:
        f: a model function from `fattr.functional` (or `per_example` of one).
        layer: the dotted name from `model.named_modules()`, or the submodule itself.
        batch_size: the most model inputs per forward call (captum's perturbations_per_eval
            counts whole batches instead); None sends all F * B ablations at once. The result
            does not depend on it.
        output: picks a tensor from the model's output.

    Returns `attr(params, x, target=None, *, baseline=None, layer_mask=None)` shaped like the
    layer output (B, ...). `baseline` is the ablated value: None (0), a number, or a tensor
    broadcastable to the layer output. `layer_mask` holds integer group ids broadcastable to
    the layer output, per example (B, ...) or shared; None makes every neuron its own group.
    Every neuron of a group gets the group's drop. Forward-only: `x` may hold integers (token
    ids) when the layer is, say, an embedding. Differentiable in params; works under
    `torch.func.vmap` over targets.

    >>> channels = torch.arange(256).reshape(1, 256, 1, 1)          # one group per channel
    >>> a = fattr.layer_feature_ablation(f, "layer3", batch_size=256)(params, x, labels,
    ...                                                               layer_mask=channels)

    The method as implemented in captum (LayerFeatureAblation); see Zeiler and Fergus,
    "Visualizing and Understanding Convolutional Networks" (2014),
    https://arxiv.org/abs/1311.2901, for occlusion of inner units.
    """
    name = "layer_feature_ablation"
    check_batch_size(batch_size, name)
    model, tap = layer_tap(f, layer, output, name, attribute_to_input)

    def compute(params: Params, call: Call, baseline: BaselineSpec = None,
                layer_mask: Tensor | None = None) -> Tensor:
        (shape, dtype, device), = tap.shapes(params, call, call.inputs)
        _check_mask(layer_mask, name)
        _check_fits(baseline, "baseline", shape, tap)
        _check_fits(layer_mask, "layer_mask", shape, tap)
        like = torch.zeros(shape, dtype=dtype, device=device)
        fill = baseline_like(baseline, like, name)
        features = feature_groups(layer_mask, (like,), name)
        full = full_scores(model, params, call, batch_size)
        drops = full - ablated_scores(tap, params, call, features, fill, full, batch_size)
        return as_result(features.expand(drops.T), (like,))[0]

    return attribution(model, compute, gradient=False, empty=empty_layer_output(tap),
                       batched_kwargs=("baseline", "layer_mask"),
                       doc=layer_feature_ablation.__doc__)
