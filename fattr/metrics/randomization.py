"""Model randomization (Adebayo et al. 2018): does the attribution depend on the weights?"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Union

import torch
from torch import Tensor, nn

from fattr.core.call import Call, prepare
from fattr.core.checks import check_generator
from fattr.core.inputs import Inputs, flatten_inputs
from fattr.core.model import Model, ModelFn, Params
from fattr.core.targets import TargetSpec
from fattr.errors import FattrError, FattrTypeError
from fattr.layers.taps import LayerSpec, layer_name
from fattr.metrics.base import as_result, check_method, forwarded, model_of, safe_divide

Similarity = Union[str, Callable[[Tensor, Tensor], Tensor]]


def average_ranks(values: Tensor) -> Tensor:
    """Ranks 0..n-1 of each row of (B, n), ties sharing their average rank (as scipy's
    `rankdata`), without a loop."""
    ordered, order = values.sort(dim=1, stable=True)
    n = values.shape[1]
    position = torch.arange(n, device=values.device).expand_as(order)
    change = ordered[:, 1:] != ordered[:, :-1]
    starts = torch.cat([torch.ones_like(change[:, :1]), change], 1)
    ends = torch.cat([change, torch.ones_like(change[:, :1])], 1)
    first = torch.where(starts, position, 0).cummax(1).values
    last = torch.where(ends, position, n - 1).flip(1).cummin(1).values.flip(1)
    mean_rank = (first + last).to(torch.float64 if values.dtype == torch.float64
                                  else torch.float32) / 2
    return torch.empty_like(mean_rank).scatter(1, order, mean_rank)


def pearson(a: Tensor, b: Tensor) -> Tensor:
    """Pearson correlation of each row of (B, n) pairs (0 where a row is constant)."""
    a = a - a.mean(1, keepdim=True)
    b = b - b.mean(1, keepdim=True)
    return safe_divide((a * b).sum(1), (a.square().sum(1) * b.square().sum(1)).sqrt())


def spearman(a: Tensor, b: Tensor) -> Tensor:
    """Spearman rank correlation of two batches of maps (B, ...) -> (B,), ties averaged."""
    return pearson(average_ranks(a.flatten(1)), average_ranks(b.flatten(1)))


SIMILARITIES: dict[str, Callable[[Tensor, Tensor], Tensor]] = {
    "spearman": spearman,
    "spearman_abs": lambda a, b: spearman(a.abs(), b.abs()),
    "pearson": lambda a, b: pearson(a.flatten(1), b.flatten(1)),
}


def execution_order(module: nn.Module, model: Model, params: Params, call: Call) -> list[str]:
    """Names of the submodules that own parameters, in the order they last run in the model on
    the call's inputs (with its extra forward arguments).

    Uses a global forward hook for the duration of one call (nothing is put on `module`)."""
    names = {id(m): name for name, m in module.named_modules()}
    seen: list[str] = []

    def record(sub: nn.Module, inputs: Any, out: Any) -> None:
        name = names.get(id(sub))
        if name is not None and next(sub.parameters(recurse=False), None) is not None:
            if name in seen:
                seen.remove(name)
            seen.append(name)

    handle = nn.modules.module.register_module_forward_hook(record)
    try:
        with torch.no_grad():
            call.run(model, params, call.inputs)
    finally:
        handle.remove()
    return seen


def reinitialized(params: Params, module: nn.Module, layer: str,
                  generator: torch.Generator | None) -> dict[str, Tensor]:
    """New values for the parameters of one layer: uniform in [-b, b], b = 1/sqrt(fan_in)
    (PyTorch's default bound for Linear and Conv weights and biases); a layer without a
    matrix-shaped weight (a norm layer) gets b = 1."""
    sub = module.get_submodule(layer)
    prefix = f"{layer}." if layer else ""
    own = {f"{prefix}{name}": p for name, p in sub.named_parameters(recurse=False)}
    matrices = [p for p in own.values() if p.ndim >= 2]
    bound = 1.0 / math.sqrt(matrices[0][0].numel()) if matrices else 1.0
    fresh = {}
    for name in own:
        if name in params:
            old = params[name]
            draw = torch.rand(old.shape, generator=generator, dtype=old.dtype,
                              device=old.device)
            fresh[name] = (2 * draw - 1) * bound
    return fresh


def model_randomization(f: ModelFn, params: Params, x: Tensor | Inputs, target: TargetSpec,
                        method: Callable[[ModelFn], Callable[..., Any]],
                        generator: torch.Generator | None = None, *,
                        similarity: Similarity = "spearman",
                        layers: Sequence[LayerSpec] | None = None, model_args: Any = (),
                        model_kwargs: Mapping[str, Any] | None = None,
                        **per_call: Any) -> Tensor:
    """Similarity of the attribution to the original after cascading re-initialization of the
    layers, top layer first.

        S[l, b] = sim(A_theta(x_b), A_theta_l(x_b)),   theta_l = theta with the top l + 1
                                                       layers re-initialized

    A method that explains the model should decorrelate as more layers are randomized;
    edge-detector-like methods (guided backprop) stay similar. The user's module and `params`
    are never modified: every stage is a new params dict (the randomized layers get new
    tensors, the others are shared) passed to the same attribution function.

    Args:
        f: a model function from `fattr.functional(model)` (the layers come from `f.module`),
            in eval mode: a training-mode model is refused before any forward pass.
        params, x, target: as for the attribution; x is a tensor or a tuple of tensors (the
            maps of all inputs are then compared as one flattened map per example).
        method: maps a model function to an attribution function, e.g. `fattr.saliency` or
            `lambda f: fattr.integrated_gradients(f, steps=16)`; called once, with `f`.
        generator: source of the new weights. Each parameter of a randomized layer is drawn
            uniform in [-b, b], b = 1/sqrt(fan_in) (PyTorch's default init bound for Linear
            and Conv; 1 for layers without a weight matrix, such as norm layers). Buffers
            (BatchNorm statistics) are kept.
        similarity: "spearman" (rank correlation of the signed maps, ties averaged; default),
            "spearman_abs" (of the absolute maps), "pearson", or a callable
            `(a, b) -> Tensor (B,)` on two batches of maps.
        layers: the layers to randomize, top first (dotted names or submodules). Default: every
            submodule that owns parameters, in reverse order of its (last) execution in
            f(params, x).
        model_args, model_kwargs: extra forward arguments, passed to the attribution function
            (and to the forward pass that finds the layer order).
        **per_call: passed to the attribution function (`baseline=`, ...).

    Returns a Tensor (L, B) (L layers; (L,) for a per-example model): row l is the similarity
    after randomizing layers[0..l]. Adebayo et al. also report SSIM and HOG similarity; fattr
    has only the correlations (or your callable).

    >>> sim = fattr.metrics.model_randomization(f, params, x, labels, fattr.saliency)
    >>> sim.mean(1)   # should fall towards 0 from the first row to the last

    Adebayo, Gilmer, Muelly, Goodfellow, Hardt, Kim, "Sanity Checks for Saliency Maps" (2018),
    https://arxiv.org/abs/1810.03292
    """
    name = "model_randomization"
    model = model_of(f, None, name)
    module = model.require_module()
    check_method(method, name)
    check_generator(generator, name)
    compare = SIMILARITIES.get(similarity) if isinstance(similarity, str) else similarity
    if not callable(compare):
        error = FattrError if isinstance(similarity, str) else FattrTypeError
        raise error(f"{name}: similarity must be one of {', '.join(SIMILARITIES)} or a "
                    f"callable (a, b) -> Tensor(B,), got {similarity!r}.")
    # checks x, the extra arguments and the eval mode before any forward pass
    call = prepare(model, x, target, model_args, model_kwargs, gradient=False)
    if layers is None:
        order = execution_order(module, model, params, call)[::-1]
    else:
        order = [layer_name(module, layer, name) for layer in layers]
    if not order:
        raise FattrError(f"{name}: the model has no layers with parameters to randomize.")
    attr_fn = method(f)
    per_call = {**per_call, **forwarded(model_args, model_kwargs)}

    def maps(p: Params) -> Tensor:
        """The attribution under params p, batched: as returned for one input, one flattened
        (B, D) map over all inputs for a tuple x."""
        values = as_result(attr_fn(p, x, target, **per_call), len(call.inputs), call.single,
                           name)
        values = tuple(v[None] for v in values) if model.per_example else values
        return values[0] if call.single else flatten_inputs(values)

    original = maps(params)
    stage = dict(params)
    rows = []
    for layer in order:  # one stage per layer: each builds on the previous one
        fresh = reinitialized(params, module, layer, generator)
        if not fresh:
            raise FattrError(f"{name}: layer {layer!r} has no parameters in params to "
                             "randomize; pass layers that own parameters (Conv, Linear, ...).")
        stage = {**stage, **fresh}
        rows.append(compare(original, maps(stage)))
    result = torch.stack(rows)
    return result[:, 0] if model.per_example else result
