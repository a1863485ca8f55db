"""Per-example gradients of a summed loss with respect to chosen parameters.

`torch.func.vmap(torch.func.grad(loss of one example))` gives one gradient per row in one
batched call (no hooks, no Python loop over rows).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from torch import Tensor
from torch.func import grad, vmap

from fattr.core.model import Model, Params
from fattr.errors import FattrError

Loss = Callable[[Tensor, Tensor], Tensor]


def per_example_gradients(model: Model, loss: Loss, params: Params, names: Sequence[str],
                          x: Tensor, y: Tensor) -> dict[str, Tensor]:
    """{name: (B, *shape)}: the gradient of loss(f(x_b), y_b) for every row b of x, y."""
    fixed = {k: v for k, v in params.items() if k not in names}
    method = model.method

    def one(wrt: dict[str, Tensor], xb: Tensor, yb: Tensor) -> Tensor:
        value = loss(model({**fixed, **wrt}, xb.unsqueeze(0)), yb.unsqueeze(0))
        if not isinstance(value, Tensor) or value.ndim != 0:
            shape = tuple(value.shape) if isinstance(value, Tensor) else type(value).__name__
            raise FattrError(f"{method}: loss(out, y) must return one scalar, the loss summed "
                             f"over the batch; got {shape}. Use reduction='sum'.")
        return value

    return vmap(grad(one), in_dims=(None, 0, 0))({k: params[k] for k in names}, x, y)
