"""Per-example gradients of Linear and Conv2d parameters from one ordinary backward pass.

The loss gradient at a layer's output, d, is per example already (examples are independent
and the loss sums over them), so one batched backward pass gives d for every layer at once;
a layer's per-example weight gradient is then a contraction of d with the layer's input a:

    Linear:  g_b = sum_t d_bt a_bt^T          Conv2d:  g_b = D_b U_b^T,  U_b = unfold(a_b)

This is the same number as `vmap(grad(...))` (tests check it), at about half the time on
CPU, where vmap runs a convolution's weight gradient as a convolution with one group per
example. It applies when every differentiated parameter is the weight or bias of an
nn.Linear or a zero-padded nn.Conv2d used once per forward pass, nothing has to be
differentiated through the result and no torch.func transform is active; `usable` decides.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch._functorch.pyfunctorch import retrieve_all_functorch_interpreters

from fattr.core.model import Model, Params
from fattr.errors import FattrError
from fattr.influence.gradients import Loss


class Reused(Exception):
    """A layer ran twice in one forward pass: its gradient is a sum over both uses, which the
    contraction above does not see; the caller falls back to vmap(grad)."""


def affine_layers(model: Model, names: Sequence[str]) -> dict[str, nn.Module] | None:
    """{module name: module} covering exactly `names`, or None when some parameter is not
    the weight or bias of a supported layer (or a layer's weight is shared with another)."""
    module = model.module
    if not isinstance(module, nn.Module):
        return None
    owners: dict[str, nn.Module] = {}
    for name in names:
        owner, _, leaf = name.rpartition(".")
        sub = module.get_submodule(owner) if owner else module
        if leaf not in ("weight", "bias") or not _supported(sub):
            return None
        owners[owner] = sub
    uses: dict[int, int] = {}
    for sub in module.modules():
        for p in sub.parameters(recurse=False):
            uses[id(p)] = uses.get(id(p), 0) + 1
    shared = any(uses.get(id(p), 0) > 1 for sub in owners.values() for p in sub.parameters())
    return None if shared else owners


def _supported(sub: nn.Module) -> bool:
    if type(sub) is nn.Linear:
        return True
    return (type(sub) is nn.Conv2d and sub.padding_mode == "zeros"
            and not isinstance(sub.padding, str))


def usable(params: Params, x: Tensor) -> bool:
    """No transform is active and no gradient has to flow out of the result."""
    return not retrieve_all_functorch_interpreters() and not x.requires_grad and \
        not any(t.requires_grad for t in params.values())


def affine_gradients(model: Model, loss: Loss, params: Params, layers: dict[str, nn.Module],
                     names: Sequence[str], x: Tensor, y: Tensor) -> dict[str, Tensor]:
    """{name: (B, *shape)} per-example gradients, for the layers `affine_layers` found."""
    inputs, grads = _inputs_and_output_gradients(model, loss, params, layers, x, y)
    found: dict[str, Tensor] = {}
    for owner, sub in layers.items():
        a, d = inputs.get(owner), grads.get(owner)
        weight = params[f"{owner}.weight" if owner else "weight"]
        if a is None:  # the layer did not run: its parameters have no gradient
            batch = x.shape[0]
            found[owner] = (weight.new_zeros(batch, *weight.shape),
                            weight.new_zeros(batch, weight.shape[0]))
        elif isinstance(sub, nn.Linear) and a.ndim == 2:
            found[owner] = (d.unsqueeze(2) * a.unsqueeze(1), d)
        elif isinstance(sub, nn.Linear):  # extra axes (tokens): a sum over them
            d3, a3 = d.reshape(d.shape[0], -1, d.shape[-1]), a.reshape(a.shape[0], -1, a.shape[-1])
            found[owner] = (torch.bmm(d3.transpose(1, 2), a3), d3.sum(1))
        else:
            found[owner] = _conv2d(sub, weight, a, d)
    prefix = {name: name.rpartition(".") for name in names}
    return {name: found[owner][0 if leaf == "weight" else 1]
            for name, (owner, _, leaf) in prefix.items()}


def _conv2d(conv: nn.Conv2d, weight: Tensor, a: Tensor, d: Tensor) -> tuple[Tensor, Tensor]:
    batch, groups = a.shape[0], conv.groups
    u = F.unfold(a, conv.kernel_size, conv.dilation, conv.padding, conv.stride)
    dd = d.flatten(2)
    u = u.reshape(batch * groups, -1, u.shape[-1])
    dg = dd.reshape(batch * groups, -1, dd.shape[-1])
    g = torch.bmm(dg, u.transpose(1, 2)).reshape(batch, *weight.shape)
    return g, dd.sum(2)


def _inputs_and_output_gradients(model: Model, loss: Loss, params: Params,
                                 layers: dict[str, nn.Module], x: Tensor, y: Tensor,
                                 ) -> tuple[dict[str, Tensor], dict[str, Tensor]]:
    """Each layer's input (cloned, so later in-place operations cannot change it) and the
    loss gradient at its output, from a zero perturbation added to the output."""
    inputs: dict[str, Tensor] = {}
    zeros: dict[str, Tensor] = {}

    def hook_for(owner: str):
        def hook(_: nn.Module, args: tuple, output: Tensor) -> Tensor:
            if owner in inputs:
                raise Reused(owner)
            inputs[owner] = args[0].detach().clone()
            zeros[owner] = torch.zeros_like(output, requires_grad=True)
            return output + zeros[owner]
        return hook

    handles = [sub.register_forward_hook(hook_for(owner)) for owner, sub in layers.items()]
    try:
        with torch.enable_grad():
            value = loss(model(params, x), y)
            if not isinstance(value, Tensor) or value.ndim != 0:
                raise FattrError(f"{model.method}: loss(out, y) must return one scalar, the loss "
                                 "summed over the batch. Use reduction='sum'.")
            owners = list(zeros)
            found = torch.autograd.grad(value, [zeros[o] for o in owners], allow_unused=True)
    finally:
        for handle in handles:
            handle.remove()
    grads = {o: torch.zeros_like(zeros[o]) if g is None else g for o, g in zip(owners, found)}
    return inputs, grads
