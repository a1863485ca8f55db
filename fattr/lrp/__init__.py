"""fattr.lrp: layer-wise relevance propagation.

The module is callable: `fattr.lrp(f, composite="epsilon_plus_flat", **rule_params)` is
`fattr.lrp.method.lrp` (see its docstring), and it is the namespace of the rules
(`fattr.lrp.Epsilon`, `Gamma`, `AlphaBeta`, `ZPlus`, `ZBox`, `Flat`, `WSquare`, `Pass`, `Norm`;
for transformers `AttnLRP`, `CPLRP` (attention) and `FrozenStd` (LayerNorm, RMSNorm)), of
`first(types)` for composites, of the named `COMPOSITES`, of `model(f, composite)` (the model
with relevance in its gradient slot) and of `canonize(module)`. The transformer composites
`attnlrp` and `cp_lrp` run as one forward and one backward (`fattr.lrp.efficient`) on
HuggingFace, timm and torchvision transformers.

>>> attr = fattr.lrp(f, "epsilon_plus")
>>> attr = fattr.lrp(f, "attnlrp")          # f: a transformer, e.g. over input embeddings
>>> attr = fattr.lrp(f, {fattr.lrp.first(nn.Conv2d): fattr.lrp.ZBox(-3, 3),
...                      nn.Conv2d: fattr.lrp.Gamma(0.25), nn.Linear: fattr.lrp.Epsilon()})
"""

import sys
import types
from typing import Any

from fattr.lrp.attention import CPLRP, AttnLRP, FrozenStd
from fattr.lrp.canonizers import Sum, canonize
from fattr.lrp.composites import COMPOSITES, first
from fattr.lrp.method import lrp, model
from fattr.lrp.rules import AlphaBeta, Epsilon, Flat, Gamma, Norm, Pass, WSquare, ZBox, ZPlus

__all__ = ["COMPOSITES", "CPLRP", "AlphaBeta", "AttnLRP", "Epsilon", "Flat", "FrozenStd", "Gamma",
           "Norm", "Pass", "Sum", "WSquare", "ZBox", "ZPlus", "canonize", "first", "model"]


class _CallableModule(types.ModuleType):
    """`fattr.lrp` is both the method and the namespace of its rules."""

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return lrp(*args, **kwargs)

    __call__.__doc__ = lrp.__doc__


sys.modules[__name__].__class__ = _CallableModule
