"""FGSM: one signed-gradient step on the input (Goodfellow et al. 2015)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from torch import Tensor

from fattr.core.model import ModelFn, Params
from fattr.robust.objective import (
    Bounds,
    Loss,
    Objective,
    Size,
    check_size,
    one_example_at_a_time,
    per_example,
    signed,
)


def fgsm(f: ModelFn, epsilon: Size, *, loss: Loss | None = None, targeted: bool = False,
         bounds: Bounds = None, zero_threshold: float = 0.0,
         output: Callable[[Any], Tensor] | None = None) -> Callable[..., Tensor]:
    """The fast gradient sign method:

        x' = clamp(x + s * epsilon * sign(grad_x L(f(x), target)) * mask, bounds)

    with s = +1 (raise the loss of the true class) or -1 when `targeted` (lower the loss of
    the target class).

    Args:
        f: model function `f(params, x)`.
        epsilon: step size, a number or a tensor with one value per example (B,).
        loss: `loss(out, target)` -> per-example losses (B,) (or their sum); default
            cross-entropy on logits, -log softmax(out)[target].
        targeted: move towards `target` instead of away from it.
        bounds: `(low, high)` clamp of the result (numbers or tensors), e.g. `(0.0, 1.0)`.
        zero_threshold: elements with |gradient| <= this do not move (default 0.0, the
            formula; captum's FGSM uses 1e-6).
        output: picks a tensor from the model's output.

    Returns `attack(params, x, target, *, mask=None) -> Tensor` shaped like x. `mask` (0/1,
    broadcast to x) limits which elements move. The result is differentiable in x (the sign
    has zero derivative, so d x' / d x is the identity inside the bounds).

    >>> adv = fattr.robust.fgsm(f, 0.1, bounds=(0.0, 1.0))(params, x, labels)

    Differs from captum: captum's default loss is -log(out), for models that output
    probabilities (pass cross-entropy to compare); captum leaves elements with
    |gradient| <= 1e-6 unchanged (`zero_threshold=1e-6` here), fattr moves every element
    whose gradient is not zero. Confident predictions have such tiny gradients.

    Goodfellow, Shlens, Szegedy, "Explaining and Harnessing Adversarial Examples" (ICLR 2015),
    https://arxiv.org/abs/1412.6572
    """
    epsilon = check_size(epsilon, "epsilon", "fgsm")
    zero_threshold = check_size(zero_threshold, "zero_threshold", "fgsm")
    objective = Objective(f, loss, targeted, bounds, "fgsm", output)

    def attack(params: Params, x: Tensor, target: Any = None, *,
               mask: Tensor | None = None) -> Tensor:
        label = objective.check(x, target, mask)
        step = signed(objective.gradient(params, x, label), zero_threshold)
        if mask is not None:
            step = step * mask
        return objective.bound(x + objective.sign * per_example(epsilon, x, "epsilon", "fgsm")
                               * step)

    attack.__doc__ = fgsm.__doc__
    return one_example_at_a_time(objective, attack)
