"""Randomness a module type does not reveal: dropout called as a function while training.

`check_eval_mode` refuses BatchNorm, Dropout modules, and recurrent and attention modules with
dropout, in training mode. A module can also draw dropout itself, `F.dropout(x, p,
training=self.training)` or `F.scaled_dot_product_attention(..., dropout_p=p)`; when any module
of the model is in training mode, each forward pass runs under `DropoutWatch`, which refuses
such a call (a TorchFunctionMode, so also inside `vmap` and `grad`).
"""

from __future__ import annotations

from typing import Any

import torch.nn.functional as F
from torch import nn
from torch.overrides import TorchFunctionMode

from fattr.errors import FattrError

_DROPOUTS = {F.dropout, F.dropout1d, F.dropout2d, F.dropout3d, F.alpha_dropout,
             F.feature_alpha_dropout}


def any_training(module: nn.Module | None) -> bool:
    """Whether some module of the tree is in training mode."""
    return module is not None and any(m.training for m in module.modules())


class DropoutWatch(TorchFunctionMode):
    """Refuses functional dropout that would draw random numbers during a forward pass."""

    def __init__(self, method: str):
        super().__init__()
        self.method = method

    def __torch_function__(self, func: Any, types: Any, args: tuple = (),
                           kwargs: dict | None = None) -> Any:
        kwargs = kwargs or {}
        if func in _DROPOUTS:
            p = kwargs.get("p", args[1] if len(args) > 1 else 0.5)
            training = kwargs.get("training", args[2] if len(args) > 2 else True)
            if training and p > 0:
                self._refuse(f"{func.__name__}(p={p}, training=True)")
        elif func is F.scaled_dot_product_attention:
            p = kwargs.get("dropout_p", args[4] if len(args) > 4 else 0.0)
            if p > 0:
                self._refuse(f"scaled_dot_product_attention(dropout_p={p})")
        return func(*args, **kwargs)

    def _refuse(self, call: str) -> None:
        raise FattrError(f"{self.method}: the model calls {call} in its forward pass, so its "
                         "output is random and attributions would be too. A module of the model "
                         "is in training mode: call model.eval() before attributing.")
