"""Input gradients of the target score: the primitive under every gradient method.

The target is selected inside the function and `torch.func.grad` is taken of the sum over the
batch; examples are independent, so one pass gives every per-example gradient. The per-row
scores come back as aux. Paths and noise are rows (step, example) evaluated in chunks by
`fattr.core.chunking.path_sum`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor
from torch._C._functorch import TransformType
from torch._functorch.pyfunctorch import retrieve_all_functorch_interpreters
from torch.func import grad
from torch.utils._pytree import tree_flatten, tree_map, tree_unflatten

from fattr.core.call import Call
from fattr.core.inputs import Inputs
from fattr.core.model import Model, Params


def may_be_differentiated(model: Model, params: Params, call: Call, *tensors: Tensor) -> bool:
    """Whether anything outside may differentiate an attribution computed now.

    True under a grad or jvp transform (`torch.func.grad`, `jacrev`, ...), when a tensor the
    model sees requires grad (the inputs, the extra forward arguments, `tensors` such as
    references, the params, and the module's own parameters the params dict leaves out), and,
    conservatively, with a callable target or an `output=` selector, which may capture such
    tensors.
    """
    target = call.target
    if any(i.key() in (TransformType.Grad, TransformType.Jvp)
           for i in retrieve_all_functorch_interpreters()):
        return True
    if callable(target.spec) or model.output is not None:
        return True
    module = model.module
    own = () if module is None else (p for n, p in module.named_parameters() if n not in params)
    seen = (*call.tensors(), *tensors, *params.values(), *own)
    return any(isinstance(t, Tensor) and t.requires_grad for t in seen)


def plain_autograd_suffices(model: Model, params: Params, call: Call, *tensors: Tensor) -> bool:
    """Whether a gradient taken now may come from plain `torch.autograd.grad`: no torch.func
    transform is active (plain autograd cannot run inside `vmap`) and nothing can differentiate
    the result (`may_be_differentiated`). Never while torch.compile traces: Dynamo traces
    `torch.func.grad` into the graph, while `autograd.grad` and the transform queries break it."""
    if torch.compiler.is_compiling():
        return False
    return not retrieve_all_functorch_interpreters() and \
        not may_be_differentiated(model, params, call, *tensors)


def gradient_with_aux(objective: Callable[..., tuple[Tensor, Any]],
                      argnums: int | tuple[int, ...], plain: bool) -> Callable[..., tuple]:
    """`torch.func.grad(objective, argnums, has_aux=True)`, or the same from one plain
    `torch.autograd.grad` when `plain` (nothing can differentiate the result, see
    `may_be_differentiated`): torch.func differentiates with create_graph, which keeps every
    activation alive through the backward pass (1.7x the peak memory and 1.1x the time on a
    resnet18, measured). The differentiated arguments may be tensors or lists of tensors."""
    if not plain:
        return grad(objective, argnums, has_aux=True)

    def plain_grad(*args: Any) -> tuple:
        which = (argnums,) if isinstance(argnums, int) else argnums
        leaves, spec = tree_flatten([args[i] for i in which])
        wrt = [t.detach().requires_grad_(True) for t in leaves]
        rebuilt = tree_unflatten(wrt, spec)
        call = list(args)
        for i, value in zip(which, rebuilt):
            call[i] = value
        with torch.enable_grad():
            total, aux = objective(*call)
            found = torch.autograd.grad(total, wrt, allow_unused=True) if total.requires_grad \
                else [None] * len(wrt)
        grads = tree_unflatten([torch.zeros_like(t) if g is None else g
                                for t, g in zip(leaves, found)], spec)
        aux = tree_map(lambda t: t.detach() if isinstance(t, Tensor) else t, aux)
        return (grads[0] if isinstance(argnums, int) else tuple(grads)), aux

    return plain_grad


def input_gradient(model: Model, params: Params, inputs: Inputs, call: Call,
                   rows: Tensor | None = None) -> tuple[Inputs, Tensor]:
    """(d score / d inputs, score) for each row of the inputs; `rows` maps rows to examples.

    The gradient is a tuple with one tensor per input. `torch.func.grad` of the summed score, so
    the result composes with every transform and carries a graph when params or inputs require
    grad; a plain `autograd.grad` when nothing can differentiate the result
    (`gradient_with_aux`).
    """
    plain = plain_autograd_suffices(model, params, call)

    def score(values: Inputs) -> tuple[Tensor, Tensor]:
        chosen = call.score(model, params, values, rows)
        return chosen.sum(), chosen

    return gradient_with_aux(score, 0, plain)(tuple(inputs))


def fold(points: Tensor) -> tuple[Tensor, Tensor]:
    """(S, B, ...) -> (S*B, ...) rows and the example index of each row."""
    steps, batch = points.shape[:2]
    rows = points.reshape(steps * batch, *points.shape[2:])
    example = torch.arange(batch, device=points.device).repeat(steps)
    return rows, example


def scaled(values: Inputs, factor: Tensor) -> Inputs:
    """Each input's rows times a per-row factor (N,)."""
    return tuple(v * factor.reshape(-1, *([1] * (v.ndim - 1))) for v in values)
