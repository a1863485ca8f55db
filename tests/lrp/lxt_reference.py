"""lxt 2.1's efficient AttnLRP / CP-LRP rules applied to HuggingFace models, as references.

lxt patches classes globally. With transformers 5 its `patch_attention` fails (it replaces
`ALL_ATTENTION_FUNCTIONS`, whose `get_interface` the models call, with a plain dict) and its
package `__init__` imports names transformers removed, so the tests import lxt's rule modules
directly and apply lxt's own forwards (`rms_norm_forward`, `gated_mlp_forward`,
`layer_norm_forward`, `wrap_attention_forward`...) to the module-level `eager_attention_forward`
instead: lxt's rules, on an eager-attention model. Every patch is undone on exit.
"""

from __future__ import annotations

import contextlib
import copy
import pathlib
import sys
import types
from collections.abc import Iterator
from typing import Any

import torch
from torch import nn


def efficient() -> types.ModuleType:
    """lxt.efficient.patches, imported without lxt.efficient's package __init__."""
    import lxt

    root = pathlib.Path(lxt.__file__).parent / "efficient"
    for name, path in (("lxt.efficient", root), ("lxt.efficient.models", root / "models")):
        if name not in sys.modules or not hasattr(sys.modules[name], "__path__"):
            package = types.ModuleType(name)
            package.__path__ = [str(path)]
            sys.modules[name] = package
    from lxt.efficient import patches

    return patches


@contextlib.contextmanager
def patched(changes: dict[tuple[Any, str], Any]) -> Iterator[None]:
    """Set `owner.attr = value` for each entry, and always restore the previous values."""
    saved = {key: key[0].__dict__[key[1]] if isinstance(key[0], type) else getattr(*key)
             for key in changes}
    try:
        for (owner, attr), value in changes.items():
            setattr(owner, attr, value)
        yield
    finally:
        for (owner, attr), value in saved.items():
            setattr(owner, attr, value)


def gated_decoder(modeling: types.ModuleType, prefix: str, cp: bool
                  ) -> contextlib.AbstractContextManager:
    """lxt's attnLRP / cp_LRP map for a Llama-style model (Llama, Qwen3): gated MLP, RMSNorm,
    eager attention."""
    lxt = efficient()
    wrap = lxt.cp_wrap_attention_forward if cp else lxt.wrap_attention_forward
    return patched({
        (getattr(modeling, prefix + "MLP"), "forward"):
            lxt.cp_gated_mlp_forward if cp else lxt.gated_mlp_forward,
        (getattr(modeling, prefix + "RMSNorm"), "forward"): lxt.rms_norm_forward,
        (modeling, "eager_attention_forward"): wrap(modeling.eager_attention_forward)})


def gpt2(cp: bool) -> contextlib.AbstractContextManager:
    """lxt's attnLRP / cp_LRP map for GPT-2 (its MLP forward with the identity rule)."""
    lxt = efficient()
    from lxt.efficient.models import gpt2 as lxt_gpt2
    from transformers.models.gpt2 import modeling_gpt2

    wrap = lxt.cp_wrap_attention_forward if cp else lxt.wrap_attention_forward
    return patched({
        (modeling_gpt2.GPT2MLP, "forward"): lxt_gpt2.mlp_forward,
        (nn.LayerNorm, "forward"): lxt.layer_norm_forward,
        (modeling_gpt2, "eager_attention_forward"): wrap(modeling_gpt2.eager_attention_forward)})


def relevance(net: nn.Module, x: torch.Tensor, score: Any,
              patches: contextlib.AbstractContextManager) -> torch.Tensor:
    """lxt's relevance: x times the gradient of `score(net(x))`, classes patched, on a deep copy
    of the model."""
    peer = copy.deepcopy(net)
    with patches:
        v = x.clone().requires_grad_(True)
        score(peer(v)).sum().backward()
    return (v * v.grad).detach()
