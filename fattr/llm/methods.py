"""The attribution methods of `fattr.llm.attribute`, each one of fattr's own methods run over
all target tokens at once: `torch.func.vmap` over the score columns (the T tokens; for
perturbation methods also the sequence). The model's forward pass does not depend on the
column, so under that vmap it runs once; only the backward pass (gradient methods) or the
target selection and the solver (perturbation methods) are batched.

PyTorch's fused attention (`F.scaled_dot_product_attention`, HuggingFace's "sdpa") has no vmap
batching rule for its CPU backward, so torch loops over the T columns for that one op. That
measured faster than attention written as matmuls (whose batched backward materializes T
attention matrices) and than one forward pass followed by T `autograd.grad(retain_graph=True)`
calls (benchmarks/bench_llm.py, docs/llm.md), so the model runs as it is.

Gradient methods attribute the input embeddings x (B, N, d) of the `Embedded` model;
perturbation methods a presence vector (B, F) of the `Masked` model (1 keeps a feature, 0 puts
the baseline embedding at its tokens).
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

import fattr
from fattr.errors import FattrTypeError


@dataclass(frozen=True)
class Method:
    """How one method runs: its fattr constructor, whether it differentiates (x is the input
    embeddings) or perturbs (x is the presence vector), and its per-call arguments."""

    build: Callable[..., Callable[..., Tensor]]
    gradient: bool
    per_call: tuple[str, ...] = ()
    renames: tuple[tuple[str, str], ...] = ()   # llm keyword -> fattr keyword
    linear: Callable[[dict], bool] = lambda kwargs: True  # linear in the score (given kwargs)


METHODS = {
    "saliency": Method(fattr.saliency, True, linear=lambda kwargs: not kwargs.get("abs", True)),
    "input_x_gradient": Method(fattr.input_x_gradient, True),
    "integrated_gradients": Method(fattr.integrated_gradients, True, ("baseline",),
                                   (("quadrature", "method"),)),
    "gradient_shap": Method(fattr.gradient_shap, True, ("baselines", "generator")),
    "feature_ablation": Method(fattr.feature_ablation, False, ("baseline",)),
    "shapley_value_sampling": Method(fattr.shapley_value_sampling, False,
                                     ("baseline", "generator")),
    "lime": Method(fattr.lime, False, ("baseline", "generator")),
    "kernel_shap": Method(fattr.kernel_shap, False, ("baseline", "generator")),
}


def constructor_kwargs(method: str, spec: Method, given: dict[str, Any],
                       caller: str) -> dict[str, Any]:
    """`method_kwargs` checked against the fattr constructor's keyword arguments."""
    renamed = dict(spec.renames)
    taken = {n for n in inspect.signature(spec.build).parameters if n not in ("f", "output")}
    allowed = (taken - set(renamed.values())) | set(renamed)
    unknown = sorted(set(given) - allowed - {"batch_size"})
    if unknown:
        raise FattrTypeError(f"{caller}: method {method!r} takes no argument {unknown[0]!r}; its "
                             f"arguments are {', '.join(sorted(allowed)) or 'none'} (see "
                             f"fattr.{spec.build.__name__}).")
    return {renamed.get(k, k): v for k, v in given.items()}


def over_targets(run: Callable[[Tensor], Tensor], columns: Tensor, chunk: int | None,
                 ) -> Tensor:
    """run(c) for every row c of `columns` (K, B) -> (K, B, ...), as one `vmap` (in chunks of
    `chunk` rows; None: all at once). `run` calls the model once: its forward pass does not
    depend on c, so it runs once per chunk and only what follows c is batched. Random draws
    are shared by all K rows."""
    return torch.func.vmap(run, randomness="same", chunk_size=chunk)(columns)
