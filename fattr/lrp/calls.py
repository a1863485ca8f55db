"""The functional calls of a model under single-backward LRP (`fattr.lrp.modified`).

The model's own forward runs under `GradientMode`, a `TorchFunctionMode` that sees every torch
call. Calls on tensors that depend on the input are

- routed to a rule: products of two such tensors (`x * y`, `torch.matmul`, `bmm`, `einsum`),
  `softmax` and `F.scaled_dot_product_attention` by the composite's attention rule (AttnLRP:
  the uniform rule on products, the softmax's own gradient; CP-LRP: the attention weights and
  the gate of a gated product are constants); elementwise activations by the identity rule;
  `F.layer_norm`, `F.rms_norm` and `F.group_norm` with a frozen standard deviation; linear maps
  and sums with their stabilizers when those are positive;
- allowed: linear and structural calls (views, indexing, concatenation, sums, matrix products
  with a constant, convolutions, pooling...), whose plain backward is their LRP-0 rule in this
  form;
- refused otherwise (`exp`, `log`, `pow`, a division by such a tensor, ...): a `FattrError`
  names the call, never a silent plain gradient.

Inside a normalization module (an RMSNorm written out, mapped to `FrozenStd`) the scale calls
(`rsqrt`, `sqrt`, ...) become constants instead (`norm_routes`, through `rewrite.scoped`).
"""

from __future__ import annotations

import contextlib
import contextvars
import functools
import inspect
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor
from torch._functorch.autograd_function import custom_function_call
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.utils._pytree import tree_flatten

from fattr.errors import FattrError
from fattr.lrp.modified import (
    depends,
    frozen,
    frozen_layer_norm,
    identity_rule,
    scaled,
    stabilized,
)
from fattr.rules.passes import only_rule_level, rule_level
from fattr.rules.rewrite import RuleMode, call_name, scope_routes

Handler = Callable[..., Any]


# per forward call: the rule level and the outputs of activations (the gates of products) ----

@dataclass
class State:
    level: int | None
    gates: dict[int, tuple[Tensor, bool]]  # id -> (activation output, whether sigmoid-like)


_STATE: contextvars.ContextVar[State | None] = contextvars.ContextVar("fattr_lrp_state",
                                                                    default=None)


@contextlib.contextmanager
def forward_state() -> Iterator[None]:
    """The per-forward state of the routes (entered by the modes of both LRP forms)."""
    token = _STATE.set(State(rule_level(), {}))
    try:
        yield
    finally:
        _STATE.reset(token)


def _level() -> int | None:
    state = _STATE.get()
    return rule_level() if state is None else state.level


def _dep(t: Any) -> bool:
    return depends(t, _level())


SIGMOIDS = ("Sigmoid", "Hardsigmoid")


def mark_gate(t: Tensor, sigmoid: bool = False) -> Tensor:
    """Record `t` as an activation's output (`sigmoid`: of a sigmoid-like activation, whose
    output in (0, 1) gates what it multiplies): a candidate gate of a product."""
    state = _STATE.get()
    if state is not None and isinstance(t, Tensor):
        state.gates[id(t)] = (t, sigmoid)
    return t


def _gate_kind(t: Any) -> int:
    """2 for a sigmoid-like activation's output, 1 for another activation's, 0 otherwise."""
    state = _STATE.get()
    entry = None if state is None or not isinstance(t, Tensor) else state.gates.get(id(t))
    if entry is None or entry[0] is not t:
        return 0
    return 2 if entry[1] else 1


def which_gate(a: Tensor, b: Tensor) -> int | None:
    """Which factor of an elementwise product a * b is the gate (0 or 1): the one that
    broadcasts to the other's shape (squeeze-and-excitation), else the only sigmoid-like
    activation's output, else the only activation's output (a gated MLP's
    act(gate_proj(x)) * up_proj(x)); None when nothing tells."""
    if a.shape != b.shape:
        shape = torch.broadcast_shapes(a.shape, b.shape)
        if a.shape == shape and b.numel() < a.numel():
            return 1
        if b.shape == shape and a.numel() < b.numel():
            return 0
    kinds = (_gate_kind(a), _gate_kind(b))
    if kinds[0] != kinds[1]:
        return 0 if kinds[0] > kinds[1] else 1
    return None


# the rules for functional calls -------------------------------------------------------------

@dataclass(frozen=True)
class CallRules:
    """What a composite says for functional calls: the attention rule's name ("AttnLRP",
    "CPLRP" or None), the Epsilon of linear maps, the stabilizer of sums, the rule of each
    activation family (True: the identity rule, False: the plain gradient) and that of
    `F.layer_norm` (a stabilizer, or None for the plain gradient)."""

    attention: str | None
    epsilon: float = 0.0
    stabilizer: float = 0.0
    activations: tuple[tuple[str, bool], ...] = ()
    layer_norm: float | None = 0.0
    composite: str = "this composite"


def _fail(what: str, fix: str) -> FattrError:
    return FattrError(f"lrp: {what}, which this composite has no rule for. {fix}")


_ATTENTION_FIX = ("Use the 'attnlrp' or 'cp_lrp' composite (or map the attention module to "
                  "fattr.lrp.AttnLRP() or CPLRP() in a custom composite).")


def _operands(func: Callable, args: tuple) -> tuple[Any, Any]:
    if func in _ADD_MATMULS:
        return args[1], args[2]
    return args[0], args[1]


def product(rules: CallRules, func: Callable, *args: Any, **kwargs: Any) -> Any:
    """A product of two tensors: linear in a constant factor; otherwise AttnLRP's uniform rule
    (each factor's gradient halved), or for CP-LRP the gate (an activation's output) constant."""
    a, b = _operands(func, args)
    if not (_dep(a) and _dep(b)):
        out = func(*args, **kwargs)
        return stabilized(out, rules.epsilon) if func in _MATMULS else out
    if rules.attention is None:
        raise _fail(f"the model multiplies two tensors that both depend on the input "
                    f"({call_name(func)}: gating or attention)", _ATTENTION_FIX)
    if func in _ADD_MATMULS:
        raise _fail(f"the model calls {call_name(func)} on two tensors that both depend on "
                    "the input", "Write it as torch.matmul plus the bias.")
    op = _OUT_OF_PLACE.get(func, func)
    gate = _which_gate(func, a, b) if rules.attention == "CPLRP" else None
    if gate is None:
        out = scaled(op(a, b, *args[2:], **kwargs), 0.5)
    else:
        out = op(frozen(a) if gate == 0 else a, frozen(b) if gate == 1 else b,
                 *args[2:], **kwargs)
    return args[0].copy_(out) if func in _OUT_OF_PLACE else out


def _which_gate(func: Callable, a: Tensor, b: Tensor) -> int | None:
    return None if func in _MATMULS else which_gate(a, b)


def einsum(rules: CallRules, func: Callable, equation: str, *operands: Any) -> Any:
    """torch.einsum: linear with one operand that depends on the input, a product with two."""
    tensors = operands[0] if len(operands) == 1 and isinstance(operands[0], (list, tuple)) \
        else operands
    count = sum(_dep(t) for t in tensors)
    if count <= 1:
        return stabilized(func(equation, *operands), rules.epsilon)
    if count > 2 or rules.attention is None:
        raise _fail(f"the model calls torch.einsum('{equation}') on {count} tensors that "
                    "depend on the input", _ATTENTION_FIX)
    if rules.attention == "CPLRP" and sum(_gate_kind(t) > 0 for t in tensors) == 1:
        return func(equation, *[frozen(t) if _gate_kind(t) else t for t in tensors])
    return scaled(func(equation, *tensors), 0.5)


def division(rules: CallRules, func: Callable, *args: Any, **kwargs: Any) -> Any:
    """a / b: linear when b is a constant; a denominator that depends on the input is a
    normalization, whose rule needs the module (map it to FrozenStd)."""
    b = args[0] if func is _RDIV else args[1]
    if _dep(b):
        raise _fail(f"the model divides by a tensor that depends on the input "
                    f"({call_name(func)}: a normalization?)",
                    "Map the normalization module to fattr.lrp.FrozenStd() in a custom "
                    "composite (its scale is then a constant for the rule).")
    return func(*args, **kwargs)


def softmax(rules: CallRules, func: Callable, *args: Any, **kwargs: Any) -> Any:
    """AttnLRP: the softmax's own gradient (its Taylor rule); CP-LRP: constant weights."""
    if not _dep(args[0]):
        return func(*args, **kwargs)
    if rules.attention is None:
        raise _fail(f"the model calls {call_name(func)} on a tensor that depends on the input",
                    _ATTENTION_FIX)
    out = func(*args, **kwargs)
    return frozen(out) if rules.attention == "CPLRP" else out


def _sdpa_parts(query: Tensor, key: Tensor, value: Tensor, attn_mask: Any = None,
                dropout_p: float = 0.0, *rest: Any, **kwargs: Any) -> tuple:
    return query, key, value, (attn_mask, dropout_p, *rest), kwargs


def attention(rules: CallRules, func: Callable, *args: Any, **kwargs: Any) -> Any:
    """F.scaled_dot_product_attention = softmax(q k^T s + mask) v. AttnLRP: the uniform rule on
    both products, i.e. gradients of q and k divided by 4 and of v by 2 (by the number of
    factors that depend on the input); CP-LRP: q and k constants."""
    q, k, v, rest, kw = _sdpa_parts(*args, **kwargs)
    dq, dk, dv = _dep(q), _dep(k), _dep(v)
    if not (dq or dk or dv):
        return func(q, k, v, *rest, **kw)
    if rules.attention is None:
        raise _fail("the model calls F.scaled_dot_product_attention", _ATTENTION_FIX)
    if rest[1]:
        raise FattrError(f"lrp: F.scaled_dot_product_attention runs with dropout_p={rest[1]} "
                         "(a model in training mode?); call model.eval().")
    if rules.attention == "CPLRP":
        q, k = frozen(q), frozen(k)
    else:
        scores = dq + dk  # factors of q k^T that depend on the input
        out = (dq or dk) + dv  # factors of A v
        q, k, v = scaled(q, 1 / (scores * out)), scaled(k, 1 / (scores * out)), scaled(v, 1 / out)
    if only_rule_level(_level()):
        return func(q, k, v, *rest, **kw)
    # under other transforms, the fused CPU kernels' backward has neither a derivative (for a
    # derivative of the relevance) nor a batching rule (for vmap): the math kernel has both
    with sdpa_kernel(SDPBackend.MATH):
        return func(q, k, v, *rest, **kw)


def layer_norm(epsilon: float | None, func: Callable, *args: Any, **kwargs: Any) -> Any:
    """F.layer_norm with a frozen standard deviation (None: the plain gradient)."""
    bound = _LAYER_NORM.bind(*args, **kwargs)
    bound.apply_defaults()
    x, shape, weight, bias, eps = bound.arguments.values()
    if epsilon is None or not _dep(x):
        return func(*args, **kwargs)
    return stabilized(frozen_layer_norm(x, tuple(shape), weight, bias, eps), epsilon)


def rms_norm(epsilon: float | None, func: Callable, x: Tensor, normalized_shape: Any,
             weight: Tensor | None = None, eps: float | None = None) -> Tensor:
    """F.rms_norm with a frozen 1 / rms (None: the plain gradient)."""
    if epsilon is None or not _dep(x):
        return func(x, normalized_shape, weight, eps)
    dims = tuple(range(-len(normalized_shape), 0))
    eps = torch.finfo(x.dtype).eps if eps is None else eps
    y = x * frozen(torch.rsqrt(x.pow(2).mean(dims, keepdim=True) + eps))
    return stabilized(y if weight is None else y * weight, epsilon)


def group_norm(epsilon: float | None, func: Callable, x: Tensor, num_groups: int,
               weight: Tensor | None = None, bias: Tensor | None = None,
               eps: float = 1e-5) -> Tensor:
    """F.group_norm with a frozen standard deviation per group (None: the plain gradient)."""
    if epsilon is None or not _dep(x):
        return func(x, num_groups, weight, bias, eps)
    grouped = x.reshape(x.shape[0], num_groups, -1)
    var, mean = torch.var_mean(grouped, -1, unbiased=False, keepdim=True)
    y = ((grouped - mean) * frozen(torch.rsqrt(var + eps))).reshape(x.shape)
    affine = (1, -1, *[1] * (x.ndim - 2))
    if weight is not None:
        y = y * weight.reshape(affine)
    if bias is not None:
        y = y + bias.reshape(affine)
    return stabilized(y, epsilon)


def batch_norm(func: Callable, *args: Any, **kwargs: Any) -> Any:
    """Eval-mode batch norm is a linear map; with batch statistics it is refused."""
    training = kwargs.get("training", args[5] if len(args) > 5 else False)
    if training and _dep(args[0]):
        raise FattrError("lrp: the model calls F.batch_norm with training=True (batch "
                         "statistics); call model.eval().")
    return func(*args, **kwargs)


def linear(epsilon: float, func: Callable, *args: Any, **kwargs: Any) -> Any:
    """A linear map (F.linear, convolutions, addmm): Epsilon's stabilizer on its output."""
    return stabilized(func(*args, **kwargs), epsilon)


def addition(stabilizer: float, func: Callable, *args: Any, **kwargs: Any) -> Any:
    """a + b of two tensors (a residual sum, a position embedding added): the Norm rule's
    stabilizer, when the sum depends on the input."""
    a, b = args[0], args[1]
    if kwargs or not isinstance(b, Tensor) or b.numel() < 2 or not (_dep(a) or _dep(b)):
        return func(*args, **kwargs)
    out = stabilized(_OUT_OF_PLACE.get(func, func)(*args, **kwargs), stabilizer)
    return args[0].copy_(out) if func in _OUT_OF_PLACE else out


def activation(func: Callable, out_of_place: Callable, x: Any, *args: Any, **kwargs: Any
               ) -> Any:
    """An elementwise activation by the identity rule; in-place forms write the result back."""
    if not _dep(x):
        return func(x, *args, **kwargs)
    bound = _inplace_free(func, args, kwargs)
    y = identity_rule(x, lambda t: out_of_place(t, *bound[0], **bound[1]))
    mark_gate(y, out_of_place in _SIGMOID_CALLS)
    return x.copy_(y) if _is_inplace(func, args, kwargs) else y


def _inplace_free(func: Callable, args: tuple, kwargs: dict) -> tuple[tuple, dict]:
    """The call's arguments after x with inplace=False."""
    position = _INPLACE_POSITION.get(func)
    if position is not None and len(args) >= position:
        args = args[:position - 1] + args[position:]
    return args, {k: v for k, v in kwargs.items() if k != "inplace"}


def _is_inplace(func: Callable, args: tuple, kwargs: dict) -> bool:
    if func in _ALWAYS_INPLACE:
        return True
    position = _INPLACE_POSITION.get(func)
    if position is None:
        return False
    return bool(kwargs.get("inplace", args[position - 1] if len(args) >= position else False))


def frozen_call(func: Callable, *args: Any, **kwargs: Any) -> Any:
    """The call's result as a constant for the rule (a normalization's scale)."""
    return frozen(func(*args, **kwargs))


def frozen_divisor(func: Callable, *args: Any, **kwargs: Any) -> Any:
    """a / b with b a constant for the rule (inside a normalization)."""
    if func is _RDIV:
        return func(frozen(args[0]), *args[1:], **kwargs)
    return func(args[0], frozen(args[1]), *args[2:], **kwargs)


# tables --------------------------------------------------------------------------------------

def _existing(owner: Any, names: str) -> list[Callable]:
    return [getattr(owner, n) for n in names.split() if hasattr(owner, n)]


_MULS = [torch.mul, Tensor.mul, Tensor.mul_, torch.multiply, Tensor.multiply]
_MATMULS = {torch.matmul, Tensor.matmul, torch.mm, Tensor.mm, torch.bmm, Tensor.bmm,
            Tensor.__rmatmul__}
_ADD_MATMULS = {torch.addmm, Tensor.addmm, torch.baddbmm, Tensor.baddbmm, torch.addbmm,
                Tensor.addbmm}
_OUT_OF_PLACE = {Tensor.mul_: torch.mul, Tensor.add_: torch.add, Tensor.sub_: torch.sub}
_RDIV = Tensor.__rdiv__
_DIVISIONS = [torch.div, Tensor.div, Tensor.div_, torch.true_divide, Tensor.true_divide,
              torch.divide, Tensor.divide, _RDIV]
_SOFTMAXES = [F.softmax, torch.softmax, Tensor.softmax]
_ADDITIONS = [torch.add, Tensor.add, Tensor.add_, torch.sub, Tensor.sub, Tensor.sub_]
_LINEAR_CALLS = [F.linear, F.conv1d, F.conv2d, F.conv3d, F.conv_transpose1d,
                 F.conv_transpose2d, F.conv_transpose3d, *_ADD_MATMULS]
_LAYER_NORM = inspect.signature(F.layer_norm)

# elementwise activations: (family, function, out-of-place form); the family names the module
# type whose composite rule the call follows
_ACTIVATION_CALLS: list[tuple[str, Callable, Callable]] = [
    ("ReLU", F.relu, F.relu), ("ReLU", torch.relu, torch.relu), ("ReLU", Tensor.relu, torch.relu),
    ("ReLU", torch.relu_, torch.relu), ("ReLU", Tensor.relu_, torch.relu),
    ("GELU", F.gelu, F.gelu), ("SiLU", F.silu, F.silu),
    ("Sigmoid", torch.sigmoid, torch.sigmoid), ("Sigmoid", Tensor.sigmoid, torch.sigmoid),
    ("Sigmoid", torch.sigmoid_, torch.sigmoid), ("Sigmoid", Tensor.sigmoid_, torch.sigmoid),
    ("Sigmoid", F.sigmoid, torch.sigmoid),
    ("Tanh", torch.tanh, torch.tanh), ("Tanh", Tensor.tanh, torch.tanh),
    ("Tanh", torch.tanh_, torch.tanh), ("Tanh", Tensor.tanh_, torch.tanh),
    ("Tanh", F.tanh, torch.tanh),
    ("LeakyReLU", F.leaky_relu, F.leaky_relu), ("LeakyReLU", F.leaky_relu_, F.leaky_relu),
    ("ELU", F.elu, F.elu), ("ELU", F.elu_, F.elu), ("Softplus", F.softplus, F.softplus),
    ("Mish", F.mish, F.mish), ("Hardswish", F.hardswish, F.hardswish),
    ("Hardsigmoid", F.hardsigmoid, F.hardsigmoid), ("ReLU6", F.relu6, F.relu6),
    ("Hardtanh", F.hardtanh, F.hardtanh), ("Hardtanh", F.hardtanh_, F.hardtanh),
    ("SELU", F.selu, F.selu), ("SELU", torch.selu, torch.selu), ("CELU", F.celu, F.celu),
    ("LogSigmoid", F.logsigmoid, F.logsigmoid), ("Softsign", F.softsign, F.softsign),
]
_SIGMOID_CALLS = {fn for family, _, fn in _ACTIVATION_CALLS if family in SIGMOIDS}
ACTIVATION_FAMILIES = tuple(dict.fromkeys(family for family, _, _ in _ACTIVATION_CALLS))
_ALWAYS_INPLACE = {torch.relu_, Tensor.relu_, torch.sigmoid_, Tensor.sigmoid_, torch.tanh_,
                   Tensor.tanh_, F.leaky_relu_, F.elu_, F.hardtanh_}


def _inplace_position(func: Callable) -> int | None:
    try:
        names = list(inspect.signature(func).parameters)
    except (TypeError, ValueError):
        return None
    return names.index("inplace") if "inplace" in names else None


_INPLACE_POSITION = {fn: p for _, fn, _ in _ACTIVATION_CALLS
                     if (p := _inplace_position(fn)) is not None}

# calls that only move, copy or select values: their plain backward hands relevance on as it
# is, in both forms of LRP; custom autograd Functions (fattr's rule nodes under torch.func) bring
# their own backward
STRUCTURAL: frozenset = frozenset([
    custom_function_call,
    *_existing(Tensor, "view view_as reshape reshape_as transpose transpose_ t permute flatten "
               "unflatten squeeze squeeze_ unsqueeze unsqueeze_ expand expand_as repeat "
               "repeat_interleave contiguous clone to type type_as float double half bfloat16 "
               "split split_with_sizes chunk tensor_split unbind narrow select __getitem__ "
               "__setitem__ index_select gather take_along_dim roll flip fliplr flipud movedim "
               "moveaxis swapaxes swapdims diagonal masked_fill masked_fill_ where detach "
               "detach_ copy_ unfold max amax min amin sort topk zero_ fill_ new_zeros new_ones "
               "new_full new_empty requires_grad_ masked_select align_as"),
    *_existing(torch, "cat concat concatenate stack hstack vstack dstack split chunk unbind "
               "narrow select index_select gather take_along_dim roll flip movedim moveaxis "
               "permute reshape flatten squeeze unsqueeze transpose swapaxes where masked_fill "
               "clone detach max amax min amin sort topk max_pool1d max_pool2d max_pool3d "
               "max_pool1d_with_indices adaptive_max_pool1d dropout feature_dropout "
               "alpha_dropout zeros_like ones_like full_like empty_like repeat_interleave "
               "diagonal tensor_split"),
    *_existing(F, "pad dropout dropout1d dropout2d dropout3d alpha_dropout "
               "feature_alpha_dropout max_pool1d max_pool2d max_pool3d "
               "max_pool1d_with_indices max_pool2d_with_indices max_pool3d_with_indices "
               "adaptive_max_pool1d adaptive_max_pool2d adaptive_max_pool3d "
               "adaptive_max_pool1d_with_indices adaptive_max_pool2d_with_indices "
               "adaptive_max_pool3d_with_indices pixel_shuffle pixel_unshuffle "
               "channel_shuffle native_channel_shuffle"),
    *_existing(torch._C._nn, "pad reflection_pad2d"),
])

# calls whose plain backward is their rule in the Gradient x Input form: the structural ones
# and the linear maps (LRP-0 of a linear map is its plain gradient times the input)
ALLOWED: frozenset = STRUCTURAL | frozenset([
    *_existing(Tensor, "add add_ sub sub_ __rsub__ neg neg_ sum mean cumsum nansum tril triu "
               "index_put index_put_ scatter scatter_add index_add masked_scatter as_strided"),
    *_existing(torch, "add sub rsub neg sum mean cumsum tril triu conv1d conv2d conv3d "
               "conv_transpose1d conv_transpose2d conv_transpose3d addmm baddbmm addbmm "
               "avg_pool1d adaptive_avg_pool1d embedding"),
    *_existing(F, "linear conv1d conv2d conv3d conv_transpose1d conv_transpose2d "
               "conv_transpose3d avg_pool1d avg_pool2d avg_pool3d adaptive_avg_pool1d "
               "adaptive_avg_pool2d adaptive_avg_pool3d interpolate upsample upsample_nearest "
               "upsample_bilinear embedding unfold fold"),
    *_existing(torch._C._nn, "avg_pool2d avg_pool3d adaptive_avg_pool2d adaptive_avg_pool3d "
               "upsample_nearest1d upsample_nearest2d upsample_bilinear2d"),
])

# inside a normalization mapped to FrozenStd: the scale is a constant, products are linear
_SCALES = _existing(torch, "rsqrt sqrt reciprocal std norm") + \
    _existing(Tensor, "rsqrt sqrt reciprocal std norm") + [torch.linalg.vector_norm]
_CASTS = _existing(Tensor, "to type type_as float half bfloat16")
_POWERS = _existing(torch, "pow") + _existing(Tensor, "pow __pow__")
_NORM_ALLOWED = frozenset([*_MULS, *_existing(torch, "var var_mean square"),
                           *_existing(Tensor, "var square")])


def norm_power(func: Callable, base: Any, exponent: Any, *args: Any, **kwargs: Any) -> Any:
    """x ** p inside a normalization: a scale (constant for the rule) when p < 0 or p is not an
    integer, else plain (a statistic whose gradient the frozen scale cuts)."""
    out = func(base, exponent, *args, **kwargs)
    scale = isinstance(exponent, (int, float)) and (exponent < 0 or exponent != int(exponent))
    return frozen(out) if scale else out


def norm_cast(floor: torch.dtype, func: Callable, *args: Any, **kwargs: Any) -> Any:
    """A cast inside a normalization whose input has dtype `floor`: a cast below that precision
    is skipped (HuggingFace's RMSNorms compute in float32 even for a float64 model; under LRP
    such a norm keeps float64, so relevance conserves to float64 precision). Casts up, and back
    down to `floor`, run as written (a bfloat16 model's norm still computes in float32)."""
    out = func(*args, **kwargs)
    x = args[0]
    if isinstance(out, Tensor) and out.is_floating_point() and x.is_floating_point() and \
            out.device == x.device and torch.finfo(out.dtype).eps > torch.finfo(floor).eps:
        return x.to(floor)
    return out


@functools.cache
def norm_routes(dtype: torch.dtype) -> Mapping[Callable, Handler]:
    """Routes inside a normalization module mapped to FrozenStd whose input has `dtype`: its
    scale is a constant, and it computes in at least the input's precision."""
    routes: dict[Callable, Handler] = {fn: functools.partial(frozen_call, fn) for fn in _SCALES}
    routes.update({fn: functools.partial(frozen_divisor, fn) for fn in _DIVISIONS})
    routes.update({fn: fn for fn in _NORM_ALLOWED})  # plain: the scale is already constant
    routes.update({fn: functools.partial(norm_power, fn) for fn in _POWERS})
    routes.update({fn: functools.partial(norm_cast, dtype, fn) for fn in _CASTS})
    return routes


def attention_routes(rules: CallRules) -> dict[Callable, Handler]:
    """Products, softmax and fused attention under the attention rule of `rules`."""
    routes: dict[Callable, Handler] = {}
    for fn in (*_MULS, *_MATMULS, *_ADD_MATMULS):
        routes[fn] = functools.partial(product, rules, fn)
    routes[torch.einsum] = functools.partial(einsum, rules, torch.einsum)
    routes.update({fn: functools.partial(softmax, rules, fn) for fn in _SOFTMAXES})
    routes[F.scaled_dot_product_attention] = functools.partial(
        attention, rules, F.scaled_dot_product_attention)
    return routes


def linear_routes(epsilon: float) -> dict[Callable, Handler]:
    """Linear maps with Epsilon's stabilizer (their plain call when it is 0)."""
    if epsilon == 0:
        return {fn: fn for fn in _LINEAR_CALLS}
    return {fn: functools.partial(linear, epsilon, fn) for fn in _LINEAR_CALLS}


def layer_norm_routes(epsilon: float | None) -> dict[Callable, Handler]:
    """F.layer_norm, F.rms_norm and F.group_norm with frozen statistics and stabilizer
    `epsilon`, or their plain gradient for None."""
    return {F.layer_norm: functools.partial(layer_norm, epsilon, F.layer_norm),
            F.rms_norm: functools.partial(rms_norm, epsilon, F.rms_norm),
            F.group_norm: functools.partial(group_norm, epsilon, F.group_norm)}


@functools.cache
def routes(rules: CallRules) -> Mapping[Callable, Handler]:
    """Every route for a composite's call rules."""
    table = attention_routes(rules)
    if rules.epsilon > 0:
        table.update(linear_routes(rules.epsilon))
    table.update(layer_norm_routes(rules.layer_norm))
    table.update({fn: functools.partial(division, rules, fn) for fn in _DIVISIONS})
    table[F.batch_norm] = functools.partial(batch_norm, F.batch_norm)
    if rules.stabilizer > 0:
        table.update({fn: functools.partial(addition, rules.stabilizer, fn)
                      for fn in _ADDITIONS})
    identity = dict(rules.activations)
    for family, fn, out_of_place in _ACTIVATION_CALLS:
        if identity.get(family, True):
            table[fn] = functools.partial(activation, fn, out_of_place)
    return table


# the mode -----------------------------------------------------------------------------------

_REFUSED_CALLS = {F.multi_head_attention_forward: "call the nn.MultiheadAttention module (it "
                  "has a rule) instead of its functional form"}


class StatefulMode(RuleMode):
    """A rule mode that keeps `forward_state` (the activations' outputs, candidate gates of
    products) for the forward pass it runs."""

    def __enter__(self) -> StatefulMode:
        self.state = forward_state()
        self.state.__enter__()
        return super().__enter__()

    def __exit__(self, *exc: Any) -> None:
        super().__exit__(*exc)
        self.state.__exit__(*exc)


class GradientMode(StatefulMode):
    """Runs one forward of a model under single-backward LRP (see the module docstring)."""

    def __init__(self, table: Mapping[Callable, Handler]):
        super().__init__(table, {})

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        rule = scope_routes().get(func) or self.functions.get(func)
        if rule is not None:
            return rule(*args, **kwargs)
        if func in ALLOWED:
            return func(*args, **kwargs)
        return self.default(func, args, kwargs)

    def default(self, func: Callable, args: tuple, kwargs: dict) -> Any:
        return checked(func, args, kwargs, "Single-backward LRP covers linear and structural "
                       "calls, products, softmax and attention, elementwise activations and "
                       "normalizations")


def checked(func: Callable, args: tuple, kwargs: dict, covers: str) -> Any:
    """Run a call no route covers; refuse it when it acts on a tensor that depends on the input
    and returns a floating tensor (sizes, attributes and indices pass)."""
    out = func(*args, **kwargs)
    if getattr(func, "__name__", "") == "__get__":  # attributes: x.shape, x.T, x.dtype
        return out
    leaves = tree_flatten(out)[0]
    if not any(isinstance(t, Tensor) and t.is_floating_point() for t in leaves):
        return out
    if any(_dep(t) for t in tree_flatten((args, kwargs))[0]):
        reason = _REFUSED_CALLS.get(func, "its plain gradient is no LRP rule")
        raise FattrError(
            f"lrp: the model calls {call_name(func)} on a tensor that depends on the input, and "
            f"{reason}. {covers}; write the operation as a module and map it to a rule (or to "
            "None for its plain gradient) in a custom composite, or use a gradient method.")
    return out
