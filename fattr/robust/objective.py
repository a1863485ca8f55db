"""What every attack shares: the loss on the model output, its input gradient, per-example
sizes (epsilon, radius, step) and the clamp to `bounds`."""

from __future__ import annotations

import numbers
from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor

from fattr.core.call import Call, Extras
from fattr.core.checks import check_broadcasts, check_eval_mode, check_input
from fattr.core.gradients import gradient_with_aux, plain_autograd_suffices
from fattr.core.model import ModelFn, Params, as_model
from fattr.core.targets import Target
from fattr.errors import FattrError, FattrTypeError

Loss = Callable[[Tensor, Any], Tensor]
Bounds = tuple[Any, Any] | None
Size = float | Tensor  # one number, or one per example (B,)


class Objective:
    """The validated loss of an attack: `gradient(params, x, target)` is d loss / d x.

    The default loss is cross-entropy on logits per example, -log softmax(out)[target], with
    the target read like every fattr target (an int, a list or a (B,) tensor of classes). A
    custom `loss(out, target)` gets the target as given (an int or list as a (B,) tensor) and
    returns per-example losses (B,) or their sum.
    """

    def __init__(self, f: ModelFn, loss: Loss | None, targeted: bool, bounds: Bounds,
                 method: str, output: Callable[[Any], Tensor] | None = None):
        self.model = as_model(f, output, method)
        self.method = method
        if loss is not None and not callable(loss):
            raise FattrTypeError(f"{method}: loss must be callable as loss(out, target) -> "
                                 f"per-example losses (B,), got {type(loss).__name__}.")
        self.loss = loss
        if not isinstance(targeted, bool):
            raise FattrError(f"{method}: targeted must be True or False, got {targeted!r}.")
        self.sign = -1.0 if targeted else 1.0
        self.bounds = _checked_bounds(bounds, method)

    def check(self, x: Tensor, target: Any, mask: Tensor | None) -> Any:
        """Validate one call; returns the target in the form the loss gets."""
        check_input(x, self.method)
        check_eval_mode(self.model.module, self.method)
        if mask is not None:
            if not isinstance(mask, Tensor):
                raise FattrTypeError(f"{self.method}: mask must be a tensor of 0s and 1s that "
                                     f"broadcasts to x, got {type(mask).__name__}.")
            check_broadcasts(mask, x.shape, "mask", self.method, "x",
                             "Pass one 0/1 entry per input element (or broadcastable).")
        if self.loss is None:
            if target is None:
                raise FattrError(f"{self.method}: target is required: the true classes (or the "
                                 "classes to reach, with targeted=True), an int, a list or a "
                                 "(B,) tensor.")
            return Target(target, x.shape[0], x.device, self.method)
        if isinstance(target, numbers.Integral) and not isinstance(target, bool):
            return torch.full((x.shape[0],), int(target), dtype=torch.long, device=x.device)
        if isinstance(target, list):
            return torch.as_tensor(target, device=x.device)
        return target

    def losses(self, params: Params, x: Tensor, target: Any) -> Tensor:
        """The per-example losses (B,), or their sum for a custom loss that reduces."""
        out = self.model(params, x)
        if self.loss is None:
            return -target.select(out.log_softmax(-1))
        value = self.loss(out, target)
        if not isinstance(value, Tensor) or value.shape not in ((), (x.shape[0],)):
            shape = tuple(value.shape) if isinstance(value, Tensor) else type(value).__name__
            raise FattrError(f"{self.method}: loss(out, target) must return per-example losses "
                             f"of shape ({x.shape[0]},) or their sum, got {shape}.")
        return value

    def gradient(self, params: Params, x: Tensor, target: Any) -> Tensor:
        """d sum(losses) / d x: plain autograd when nothing differentiates the result (default
        loss only; a custom loss may capture tensors that require grad), else torch.func."""
        call = Call((x,), Target(None, x.shape[0], x.device, self.method), Extras(), True,
                    self.method)
        plain = self.loss is None and plain_autograd_suffices(self.model, params, call)

        def objective(inputs: Tensor) -> tuple[Tensor, Tensor]:
            value = self.losses(params, inputs, target)
            return value.sum(), value

        return gradient_with_aux(objective, 0, plain)(x)[0]

    def bound(self, x: Tensor) -> Tensor:
        if self.bounds is None:
            return x
        low, high = self.bounds
        if low is not None:
            x = torch.clamp(x, min=low)
        return x if high is None else torch.clamp(x, max=high)


def one_example_at_a_time(objective: Objective, attack: Callable[..., Tensor],
                          ) -> Callable[..., Tensor]:
    """For a model from `fattr.per_example`: add the batch axis to x (and to a tensor target
    and mask) on the way in and remove it on the way out, so the attack composes with
    `torch.func.vmap` like every fattr method."""
    if not objective.model.per_example:
        return attack

    def one(params: Params, x: Tensor, target: Any = None, *args: Any,
            mask: Tensor | None = None, **kwargs: Any) -> Tensor:
        if isinstance(target, Tensor):
            target = target.unsqueeze(0)
        if mask is not None and isinstance(mask, Tensor):
            mask = mask.unsqueeze(0)
        return attack(params, x.unsqueeze(0), target, *args, mask=mask, **kwargs).squeeze(0)

    one.__doc__ = attack.__doc__
    return one


def signed(g: Tensor, zero_threshold: float) -> Tensor:
    """sign(g), with 0 where |g| <= zero_threshold (captum's FGSM uses 1e-6)."""
    step = torch.sign(g)
    return step if zero_threshold == 0 else torch.where(g.abs() > zero_threshold, step, 0.0)


def per_example(value: Size, x: Tensor, name: str, method: str) -> Size:
    """A size (epsilon, radius, step) as given, or a (B,) tensor shaped to broadcast over x."""
    if isinstance(value, Tensor):
        if value.ndim != 1 or value.shape[0] != x.shape[0]:
            raise FattrError(f"{method}: {name} must be a number or one per example, shape "
                             f"({x.shape[0]},); got shape {tuple(value.shape)}.")
        return value.to(x.dtype).reshape(-1, *([1] * (x.ndim - 1)))
    return value


def check_size(value: object, name: str, method: str) -> Size:
    """A number >= 0, or a tensor of them (one per example, checked at the call)."""
    if isinstance(value, Tensor):
        if value.is_floating_point() and bool((value >= 0).all()):
            return value
    elif isinstance(value, numbers.Real) and not isinstance(value, bool) and value >= 0:
        return float(value)
    raise FattrError(f"{method}: {name} must be a number >= 0 or a float tensor of them (one "
                     f"per example), got {value!r}.")


def _checked_bounds(bounds: Bounds, method: str) -> Bounds:
    if bounds is None:
        return None
    if not (isinstance(bounds, tuple) and len(bounds) == 2):
        raise FattrError(f"{method}: bounds must be a (low, high) pair (numbers, tensors or "
                         f"None for no limit), got {bounds!r}.")
    low, high = bounds
    if isinstance(low, numbers.Real) and isinstance(high, numbers.Real) and low > high:
        raise FattrError(f"{method}: bounds (low, high) need low <= high, got {bounds!r}.")
    return bounds
