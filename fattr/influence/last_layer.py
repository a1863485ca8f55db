"""The two factors of a linear layer's per-example weight gradient (TracInCPFast).

For a linear layer z = W a + b with input a (B, in), the gradient of example b's loss with
respect to W is the outer product d_b a_b^T, with d_b = dL_b / dz_b. So
<d a^T, d' a'^T> = (d . d') (a . a'): influence without forming the (out x in) gradient.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from fattr.core.model import Model, Params
from fattr.errors import FattrError
from fattr.influence.gradients import Loss


def linear_factors(model: Model, loss: Loss, params: Params, name: str, x: Tensor, y: Tensor,
                   ) -> tuple[Tensor, Tensor]:
    """(d, a): the loss gradient at the layer's output (B, out) and its input (B, in).

    The layer's output is detached and made a leaf, so the backward pass runs only through
    the layers after it; the user's module carries the hook for this call only.
    """
    module = dict(model.require_module().named_modules())[name]
    seen: list[tuple[Tensor, Tensor]] = []

    def hook(_: nn.Module, inputs: tuple, output: Tensor) -> Tensor:
        if seen:
            raise FattrError(f"{model.method}: layer {name!r} ran twice in one forward pass; "
                             "last_layer must be a linear layer that runs once.")
        a = inputs[0]
        if not isinstance(output, Tensor) or a.ndim != 2:
            raise FattrError(
                f"{model.method}: last_layer {name!r} must take inputs of shape (batch, "
                f"features); got {tuple(a.shape)}. With extra axes (tokens, positions) its "
                "gradient is a sum of outer products: use layers=[...] instead.")
        z = output.detach().requires_grad_(True)
        seen.append((a.detach(), z))
        return z

    handle = module.register_forward_hook(hook)
    try:
        with torch.enable_grad():
            out = model(params, x)
            if not seen:
                raise FattrError(f"{model.method}: last_layer {name!r} did not run in the "
                                 "forward pass; pick a layer that the model calls.")
            a, z = seen[0]
            value = loss(out, y)
            if not isinstance(value, Tensor) or value.ndim != 0:
                raise FattrError(f"{model.method}: loss(out, y) must return one scalar, the loss "
                                 "summed over the batch. Use reduction='sum'.")
            (d,) = torch.autograd.grad(value, z)
    finally:
        handle.remove()
    return d, a
