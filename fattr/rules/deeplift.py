"""DeepLIFT with the rescale rule (Shrikumar et al. 2017), in the gradient form of Ancona et al.

The input and the reference run as one doubled batch `cat([x, x0])`; each nonlinearity's rule
sees both halves and replaces the derivative by the secant multiplier of the pair. Nothing is
stored on modules, so a module used twice and functional activations get the rule too.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from functools import partial
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from fattr.core.baselines import BaselineSpec, baselines_for
from fattr.core.call import Call, attribution
from fattr.core.gradients import input_gradient
from fattr.core.inputs import Inputs
from fattr.core.model import Model, ModelFn, Params, as_model
from fattr.errors import FattrError
from fattr.rules.activation import Activation, ActivationFn, ActivationRule, reads_indices
from fattr.rules.apply import under_activation_rule
from fattr.rules.nonlinearities import (
    ELU,
    GELU,
    LEAKY_RELU,
    MAX_POOLS,
    RELU,
    SIGMOID,
    SILU,
    SOFTMAX,
    SOFTPLUS,
    TANH,
)

ELEMENTWISE = (RELU, LEAKY_RELU, ELU, SIGMOID, TANH, SOFTPLUS, GELU, SILU)


def _pair(t: Tensor) -> Tensor:
    """(2n, ...) -> (2, n, ...): the input half and the reference half."""
    return t.unflatten(0, (2, -1))


def _near(delta: Tensor, eps: float) -> Tensor:
    """1.0 where |x - x0| < eps (the plain derivative is used there), else 0.0: a float weight,
    since boolean masks cost several times a float op on CPU. eps is at least the smallest
    normal number of the dtype: float16 rounds captum's 1e-10 to zero, and 0 / 0 would give NaN
    for every equal pair. A NaN difference (-inf - -inf: a masked attention score in both
    halves) is near too: `_differences` makes it 0."""
    floor = max(eps, torch.finfo(delta.dtype).tiny)
    return (floor - delta.abs()).sign_().relu_()


def _scratch() -> bool:
    """Whether the rule may overwrite the intermediates it made: nothing records its ops (no
    graph at any level; a derivative of the attribution needs them unchanged)."""
    return not torch.is_grad_enabled()


def _blend(numerator: Tensor, delta: Tensor, near: Tensor, fallback: Tensor) -> Tensor:
    """numerator / delta where the pair is far apart, `fallback` (per half) where it is near.

    Near elements divide by 1 + delta instead of delta: the unselected value stays finite, so a
    derivative of the attribution gets no 0 * inf = NaN. The choice is a `lerp` with the 0/1
    weight, exact at both ends. `numerator`, `delta` and `fallback` must be the caller's own
    intermediates: without a graph they are reused in place (fewer passes over memory)."""
    far = 1 - near
    if _scratch():
        secant = numerator.div_(delta.add_(near))
        return fallback.lerp_(secant.expand_as(fallback), far.expand_as(fallback)).flatten(0, 1)
    secant = numerator / (delta + near)
    return fallback.lerp(secant.expand_as(fallback), far.expand_as(fallback)).flatten(0, 1)


def _differences(x: Tensor, y: Tensor) -> tuple[Tensor, Tensor]:
    """x - x0 and y - y0. A NaN input difference (-inf - -inf) becomes 0, so the pair counts as
    near and takes the plain derivative."""
    x2, y2 = _pair(x), _pair(y)
    return (x2[0] - x2[1]).nan_to_num_(nan=0.0), y2[0] - y2[1]


def _times(g: Tensor, multipliers: Tensor) -> Tensor:
    """g * multipliers, in place in the multipliers (the rule's own) when nothing records."""
    return multipliers.mul_(g) if _scratch() else g * multipliers


def rescale(g: Tensor, x: Tensor, y: Tensor, fn: ActivationFn, eps: float,
            activation: Activation) -> Tensor:
    """Elementwise rescale rule: dx = g * (y - y0) / (x - x0), both halves alike.

    The rules are differentiable in x and y; a derivative of the attribution reaches x and y
    through the activation's true derivative (see `fattr.rules.passes`)."""
    dx, dy = _differences(x, y)
    slope = _pair(activation.derivative(x, y, fn))
    return _times(g, _blend(dy, dx, _near(dx, eps), slope))


def rescale_softmax(g: Tensor, x: Tensor, y: Tensor, fn: ActivationFn, eps: float) -> Tensor:
    """The rescale rule elementwise, then minus its mean along the softmax axis of each example
    (captum's normalization, which captum takes over the whole doubled batch at once)."""
    y, back = torch.func.vjp(fn, x)
    dx, dy = _differences(x, y)
    plain = back(g)[0]
    unnormalized = _blend(_pair(g) * dy, dx, _near(dx, eps), _pair(plain))
    return unnormalized - unnormalized.mean(fn.keywords["dim"], keepdim=True)


_POOL_DIMS = {F.max_pool1d: 1, F.max_pool2d: 2, F.max_pool3d: 3}


def _unpool_sum(v: Tensor, x: Tensor, indices: Tensor, fn: ActivationFn) -> Tensor:
    """Max pooling's vector-Jacobian product for v, from the forward pass's argmax indices (the
    pooling is not run again): aten's own max-pool backward, 1d pooling as 2d with a unit row.
    Differentiable in v and batched by vmap."""
    config, dims = fn.keywords, _POOL_DIMS[fn.func]

    def per_dim(value: Any) -> list[int]:
        return list(value) if isinstance(value, (tuple, list)) else [value] * dims

    kernel, stride, padding, dilation = (per_dim(config[name]) for name in
                                         ("kernel_size", "stride", "padding", "dilation"))
    if dims == 1:
        v, x, indices = v.unsqueeze(-2), x.unsqueeze(-2), indices.unsqueeze(-2)
        kernel, stride, dilation = [1, *kernel], [1, *stride], [1, *dilation]
        padding = [0, *padding]
    backward = torch.ops.aten.max_pool3d_with_indices_backward if dims == 3 else \
        torch.ops.aten.max_pool2d_with_indices_backward
    dx = backward(v, x, kernel, stride, padding, dilation, config["ceil_mode"], indices)
    return dx.squeeze(-2) if dims == 1 else dx


def rescale_max_pool(g: Tensor, x: Tensor, y: tuple[Tensor, Tensor], fn: ActivationFn,
                     eps: float) -> Tensor:
    """captum's max-pool rule: the output difference of each window goes to the argmax of
    whichever half has the larger maximum, then is divided by that element's input difference.

    `y` is the forward pooling's (values, argmax indices), so gradients are routed without
    pooling again. Overlapping windows add up at a shared argmax (captum's `max_unpool`
    overwrites them)."""
    values, indices = y
    y2 = _pair(values)
    top = torch.maximum(y2[0], y2[1])
    shares = _pair(_unpool_sum(g * torch.cat([top - y2[1], y2[0] - top]), x, indices, fn))
    dx = _pair(x)[0] - _pair(x)[1]
    return _blend(shares[0] + shares[1], dx, _near(dx, eps),
                  _pair(_unpool_sum(g, x, indices, fn)))


def deeplift_rule(eps: float = 1e-10) -> ActivationRule:
    """The rescale rules for every covered nonlinearity (for `fattr.rewrite`; the model must
    then be called on doubled batches `cat([x, x0])`)."""
    eps = check_eps(eps, "deeplift_rule")
    special = ((SOFTMAX, partial(rescale_softmax, eps=eps)),
               *((pool, reads_indices(partial(rescale_max_pool, eps=eps))) for pool in MAX_POOLS),
               *((a, partial(rescale, eps=eps, activation=a)) for a in ELEMENTWISE))
    return ActivationRule("deeplift", partial(rescale, eps=eps, activation=RELU),
                          (*ELEMENTWISE, SOFTMAX, *MAX_POOLS), special)


# calls with a nonlinearity the rules cannot see: refused rather than passed as linear
REFUSED = (F.max_pool1d_with_indices, F.max_pool2d_with_indices, F.max_pool3d_with_indices)


def explicit_attention(softmax: Callable[..., Tensor], query: Tensor, key: Tensor,
                       value: Tensor, attn_mask: Tensor | None = None, dropout_p: float = 0.0,
                       is_causal: bool = False, scale: float | None = None,
                       enable_gqa: bool = False) -> Tensor:
    """F.scaled_dot_product_attention written out, its softmax by `softmax` (the rescale rule):
    softmax(q k^T * scale + mask) v. The two products are treated as linear, as captum treats
    every product."""
    if dropout_p:
        raise FattrError(f"deeplift: F.scaled_dot_product_attention runs with dropout_p="
                         f"{dropout_p} (a model in training mode?); call model.eval().")
    if enable_gqa:
        repeat = query.shape[-3] // key.shape[-3]
        key, value = key.repeat_interleave(repeat, -3), value.repeat_interleave(repeat, -3)
    scale = query.shape[-1] ** -0.5 if scale is None else scale
    scores = query @ key.transpose(-2, -1) * scale
    length, source = scores.shape[-2:]
    lowest = torch.finfo(scores.dtype).min  # finite, as HuggingFace's masks: no inf - inf
    if is_causal:
        causal = torch.ones(length, source, dtype=torch.bool, device=scores.device).tril()
        scores = scores.masked_fill(~causal, lowest)
    if attn_mask is not None:
        scores = scores.masked_fill(~attn_mask, lowest) if attn_mask.dtype == torch.bool \
            else scores + attn_mask
    return softmax(scores, dim=-1) @ value


def check_eps(eps: float, method: str) -> float:
    if isinstance(eps, bool) or not isinstance(eps, (int, float)) or not eps > 0:
        raise FattrError(f"{method}: eps must be a positive number (the smallest |x - x0| "
                         f"divided by; default 1e-10), got {eps!r}.")
    return float(eps)


def rescaled(model: Model, eps: float) -> Model:
    """`model` with every covered nonlinearity following the rescale rule (errors name
    `model.method`)."""
    rule = dataclasses.replace(deeplift_rule(eps), name=model.method)
    softmax = rule.function_rules()[torch.softmax]
    attention = {F.scaled_dot_product_attention: partial(explicit_attention, softmax)}
    return under_activation_rule(model, rule, dict.fromkeys(REFUSED, model.method), attention)


def pair_attribution(model: Model, params: Params, call: Call, xs: Inputs, references: Inputs,
                     rows: Tensor | None = None) -> Inputs:
    """(x - x0) * multipliers for rows of the inputs and their references, through one doubled
    batch (every input doubled alike; per-example model arguments follow both halves).

    `model` must be `rescaled`. Both halves are seeded with the target, as captum does (the
    max-pool rule reads the reference half's gradient).
    """
    n = xs[0].shape[0]
    rows = torch.arange(n, device=xs[0].device) if rows is None else rows
    doubled = tuple(torch.cat([x, r]) for x, r in zip(xs, references))
    gradients, _ = input_gradient(model, params, doubled, call, rows.repeat(2))
    return tuple((x - r) * g[:n] for x, r, g in zip(xs, references, gradients))


def deeplift(f: ModelFn, eps: float = 1e-10, *,
             output: Callable[[Any], Tensor] | None = None) -> Callable[..., Tensor]:
    """DeepLIFT with the rescale rule: multipliers from the input and a reference.

    The model runs on `cat([x, x0])`. At every nonlinearity y = s(v) the backward uses the
    secant instead of the derivative,

        m = (s(v) - s(v0)) / (v - v0),   the plain derivative where |v - v0| < eps,

    and the attribution is (x - x0) times the resulting input gradient. On a ReLU network the
    attributions sum exactly to f(x) - f(x0) (see `fattr.completeness_gap`).

    Rules cover ReLU, LeakyReLU, ELU, Sigmoid, Tanh, Softplus, MaxPool1d/2d/3d (captum's
    max-pool rule) and Softmax (rescale, then the mean along the softmax axis subtracted), as
    modules (also in-place ones) and as functional calls; as an extension over captum, GELU and
    SiLU get the rescale rule too (captum passes their plain gradient). Everything else is
    treated as linear (its plain gradient), as in captum. `F.scaled_dot_product_attention`
    (timm's and HuggingFace's attention) is written out so that its softmax gets the rule (its
    two products, like every product, are linear). Max pooling with indices, and fused modules
    that compute a covered nonlinearity inside one kernel (nn.LSTM, nn.GRU, nn.RNN,
    nn.MultiheadAttention), raise, naming the module: captum treats them as linear silently.

    Differences from captum's DeepLift, each a captum bug: a module used twice works (captum
    raises, issue 1082); a nonlinear module fed directly by another (ReLU then MaxPool, as in
    VGG and ResNet) gets its own rule (captum's tensor hooks on the shared tensor give the first
    module the second one's plain gradient); overlapping max-pool windows add up at a shared
    argmax (captum's max_unpool keeps one); the softmax mean is per example.

    Args:
        f: a model from `fattr.functional(model)` (or `fattr.per_example` of one).
        eps: below this |v - v0| the plain derivative is used (default 1e-10, as captum;
            at least the dtype's smallest normal number, 6.1e-5 for float16, where 1e-10 would
            round to zero and every equal pair would give NaN).
        output: picks a tensor from the model's output.

    Returns `attr(params, x, target=None, baseline=None)` shaped like x; `baseline` is the
    reference x0: None (zeros), a number, or a tensor broadcastable to x. Differentiable in the
    params (the rules are differentiable torch ops).

    torch.compile: the rules are custom autograd Functions, which Dynamo does not trace (nor
    inside vmap, pytorch issue 129845): inside a compiled caller the whole call runs
    uncompiled (one graph break, same values); fullgraph=True refuses it.

    >>> a = fattr.deeplift(f)(params, x, target=labels, baseline=0.0)
    >>> fattr.completeness_gap(f, params, x, a, target=labels, baseline=0.0)  # ~0 for ReLU nets

    Shrikumar, Greenside, Kundaje, "Learning Important Features Through Propagating Activation
    Differences" (2017), https://arxiv.org/abs/1704.02685; Ancona, Ceolini, Oztireli, Gross,
    "Towards better understanding of gradient-based attribution methods" (2018),
    https://arxiv.org/abs/1711.06104
    """
    eps = check_eps(eps, "deeplift")
    model = as_model(f, output, "deeplift")
    ruled = rescaled(model, eps)

    def compute(params: Params, call: Call, baseline: BaselineSpec = None) -> Tensor:
        references = baselines_for(baseline, call.inputs, "deeplift")
        return call.unpack(pair_attribution(ruled, params, call, call.inputs, references))

    return attribution(model, compute, batched_kwargs=("baseline",), doc=deeplift.__doc__,
                       compilable=False)
