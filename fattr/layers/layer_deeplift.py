"""Layer DeepLIFT: the rescale rule's multipliers at a layer's output (captum's LayerDeepLift)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor, nn

from fattr.core.baselines import BaselineSpec, baselines_for
from fattr.core.call import Call, attribution
from fattr.core.inputs import tmap
from fattr.core.model import Model, ModelFn, Params, as_model
from fattr.layers.paths import layer_tap
from fattr.layers.taps import LayerSpec, empty_layer_output, layer_name
from fattr.rules.apply import under_rules
from fattr.rules.deeplift import check_eps, rescaled


def _itself(module: nn.Module) -> nn.Module:
    return module


def rescaled_except(model: Model, name: str, eps: float) -> Model:
    """`rescaled(model, eps)` in which the module `name` keeps its own type (and so the tap's
    forward hook, which the rewritten copy inherits): a tapped ReLU is not swapped for its rule
    module. The rule at the layer does not enter the gradient at the layer's OUTPUT."""
    ruled = rescaled(model, eps).fn
    return under_rules(model, {name: _itself, **ruled.rules}, ruled.functions, ruled.refuse)


def layer_deeplift(f: ModelFn, layer: LayerSpec, eps: float = 1e-10, *,
                   attribute_to_input: bool = False,
                   output: Callable[[Any], Tensor] | None = None) -> Callable[..., Tensor]:
    """DeepLIFT (rescale rule) at a layer: the layer's output change times its multipliers.

    The model runs on the doubled batch cat([x, x0]), every nonlinearity after the layer
    following the rescale rule of `fattr.deeplift`; with a = layer(x), a0 = layer(x0),

        LDL = (a - a0) * m,   m = the DeepLIFT multiplier of y_t with respect to a

    (captum's LayerDeepLift with its defaults `attribute_to_layer_input=False`,
    `multiply_by_inputs=True`). On a ReLU network the attributions over the layer sum exactly
    to f(x) - f(x0). The layer may be any module that runs once per forward pass, an activation
    included; the rules before the layer do not matter (only its output values do).

    Args:
        f: a model from `fattr.functional(model)` (or `fattr.per_example` of one).
        layer: the dotted name from `model.named_modules()`, or the submodule itself.
        eps: below this |v - v0| a nonlinearity uses its plain derivative (default 1e-10, as
            captum).
        attribute_to_input: the layer's positional inputs instead of its output (captum's
            attribute_to_layer_input; default False).
        output: picks a tensor from the model's output.

    Returns `attr(params, x, target=None, baseline=None)` shaped like the layer output (B, ...);
    `baseline` is the reference input x0: None (zeros), a number, or a tensor broadcastable to
    x. `x` may hold integers (token ids, with a baseline id) when the layer is an embedding.
    Differentiable in params. The rule coverage and the differences from captum's DeepLift
    (modules used twice, ReLU straight into MaxPool, overlapping max pools) are those of
    `fattr.deeplift`.

    torch.compile: the rules are custom autograd Functions, which Dynamo does not trace (nor
    inside vmap, pytorch issue 129845): inside a compiled caller the whole call runs
    uncompiled (one graph break, same values); fullgraph=True refuses it.

    >>> a = fattr.layer_deeplift(f, "layer3")(params, x, target=labels, baseline=0.0)
    >>> a.flatten(1).sum(1)  # == f(x)[:, labels] - f(0)[:, labels] on a ReLU network

    Shrikumar, Greenside, Kundaje, "Learning Important Features Through Propagating Activation
    Differences" (2017), https://arxiv.org/abs/1704.02685; Ancona, Ceolini, Oztireli, Gross,
    "Towards better understanding of gradient-based attribution methods" (2018),
    https://arxiv.org/abs/1711.06104
    """
    name = "layer_deeplift"
    eps = check_eps(eps, name)
    base = as_model(f, output, name)
    ruled = rescaled_except(base, layer_name(base.require_module(), layer, name), eps)
    model, tap = layer_tap(f, layer, output, name, attribute_to_input, model=ruled)

    def compute(params: Params, call: Call, baseline: BaselineSpec = None) -> Any:
        n = call.batch
        references = baselines_for(baseline, call.inputs, name)
        doubled = tuple(torch.cat([x, r]) for x, r in zip(call.inputs, references))
        rows = torch.arange(n, device=doubled[0].device).repeat(2)
        tapped = tap.gradients(params, call, doubled, rows)
        return tap.pack(tmap(lambda a, m: (a[:n] - a[n:]) * m[:n], tapped.activations,
                             tapped.gradients))

    return attribution(model, compute, gradient=False, empty=empty_layer_output(tap),
                       batched_kwargs=("baseline",), doc=layer_deeplift.__doc__, compilable=False)
