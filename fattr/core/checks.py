"""Checks on user input, done once at the public boundary of every method.

Checks that need values (finiteness, target ranges) look through torch.func's wrappers with
`concrete`, so they also run inside `vmap` and `grad`, where `bool(tensor)` is not allowed.
While `torch.compile` traces a call they are skipped (`host_values` gives None): reading a value
on the host is a `Tensor.item()` that would break the graph. Shape, dtype and configuration
checks still run there, once per compilation; run a call eagerly to check the values.
"""

from __future__ import annotations

import torch
import torch._C._functorch as _functorch
from torch import Tensor, nn

from fattr.errors import FattrError, FattrTypeError

_TRAIN_SENSITIVE = (nn.modules.batchnorm._BatchNorm, nn.modules.dropout._DropoutNd, nn.AlphaDropout)


def concrete(t: Tensor) -> Tensor:
    """The plain tensor under torch.func's wrappers (all vmap levels at once), for value checks.
    Under torch.compile, `t` itself: the trace sees through the wrappers, and the functorch
    queries are builtins that Dynamo cannot trace."""
    if torch.compiler.is_compiling():
        return t
    while (_functorch.is_batchedtensor(t) or _functorch.is_gradtrackingtensor(t)
           or _functorch.is_functionaltensor(t)):
        t = _functorch.get_unwrapped(t)
    return t


def any_over_transforms(t: Tensor) -> Tensor:
    """A boolean tensor's logical shape, true where it is true for ANY row of the vmapped
    dimensions around it: the plain tensor under torch.func's wrappers with every vmap level's
    batch dimension reduced by `any`. For a decision on the host (which rows to compute) that
    must serve every vmapped call at once. Not for torch.compile (functorch queries)."""
    while (_functorch.is_batchedtensor(t) or _functorch.is_gradtrackingtensor(t)
           or _functorch.is_functionaltensor(t)):
        batched = _functorch.is_batchedtensor(t)
        bdim = _functorch.maybe_get_bdim(t) if batched else -1
        t = _functorch.get_unwrapped(t)
        if batched and bdim >= 0:
            t = t.any(dim=bdim)
    return t


def host_values(t: Tensor) -> Tensor | None:
    """The values of `t` for a check on the host (`concrete(t)`), or None while torch.compile
    traces, where such a check would be a graph-breaking `Tensor.item()`: it is skipped."""
    if torch.compiler.is_compiling():
        return None
    return concrete(t)


def check_input(x: object, method: str, *, gradient: bool = True) -> Tensor:
    """x must be a finite tensor with a batch axis; gradient methods need floating point."""
    if not isinstance(x, Tensor):
        raise FattrTypeError(f"{method}: x must be a torch.Tensor, got {type(x).__name__}.")
    if x.ndim == 0:
        raise FattrError(f"{method}: x must have a batch axis, got a 0-d tensor. "
                         "Pass x[None] for one example, or use fattr.per_example(f).")
    if gradient and not x.is_floating_point():
        raise FattrError(
            f"{method}: x has dtype {x.dtype}, but gradients need a floating-point input. "
            "For token ids, attribute the embeddings instead (a model function of "
            "inputs_embeds), or convert with x.float() if the values are continuous.")
    values = host_values(x) if x.is_floating_point() or x.is_complex() else None
    if values is not None and values.numel() and not bool(torch.isfinite(values).all()):
        raise FattrError(f"{method}: x contains NaN or Inf; attributions of non-finite "
                         "inputs are meaningless. Clean the input first.")
    return x


def check_eval_mode(module: nn.Module | None, method: str) -> None:
    """Attribution is defined on an eval-mode model: BatchNorm and Dropout must not be training."""
    if module is None:
        return
    for name, sub in module.named_modules():
        random_inside = isinstance(sub, (nn.RNNBase, nn.MultiheadAttention)) \
            and getattr(sub, "dropout", 0) > 0  # dropout inside a fused module
        if sub.training and (isinstance(sub, _TRAIN_SENSITIVE) or random_inside):
            where = f"'{name}'" if name else "the model itself"
            why = (f"in training mode with dropout {sub.dropout} inside, so the model is random"
                   if random_inside else "in training mode, so the model is random (Dropout) "
                   "or batch-dependent (BatchNorm)")
            raise FattrError(f"{method}: {where} ({type(sub).__name__}) is {why} and "
                             "attributions would be too. Call model.eval() before attributing.")


def broadcasts_to(t: Tensor, shape: torch.Size) -> bool:
    """Whether `t` broadcasts to exactly `shape` (a baseline or mask against x)."""
    try:
        return torch.broadcast_shapes(t.shape, shape) == shape
    except RuntimeError:
        return False


def check_broadcasts(t: Tensor, shape: torch.Size, name: str, method: str, target: str,
                     fix: str) -> None:
    """Raise unless `t` broadcasts to `shape`: "{method}: {name} of shape ... does not broadcast
    to {target}, of shape .... {fix}" (the message names what it needed and how to pass it)."""
    if not broadcasts_to(t, shape):
        raise FattrError(f"{method}: {name} of shape {tuple(t.shape)} does not broadcast to "
                         f"{target} of shape {tuple(shape)}. {fix}")


def check_count(value: object, name: str, method: str, minimum: int = 1) -> int:
    """A configuration count (steps, samples, features): an int >= `minimum`."""
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise FattrError(f"{method}: {name} must be an int >= {minimum}, got {value!r}.")
    return value


def check_non_negative(value: object, name: str, method: str) -> float:
    """A configuration scale (stdev, radius): a number >= 0."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value >= 0:
        raise FattrError(f"{method}: {name} must be >= 0, got {value!r}.")
    return value


def check_generator(generator: object, method: str) -> None:
    """`generator=` must be a `torch.Generator` (or None for the global RNG)."""
    if generator is not None and not isinstance(generator, torch.Generator):
        raise FattrTypeError(f"{method}: generator must be a torch.Generator or None, got "
                             f"{type(generator).__name__}. Seed one with "
                             "torch.Generator().manual_seed(0).")
