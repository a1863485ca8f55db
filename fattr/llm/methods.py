"""The methods of `fattr.llm.attribute`: which fattr method each name is, its arguments, and
the baseline as an embedding.

Gradient methods attribute the input embeddings x (B, N, d) of the `Embedded` model;
perturbation methods a presence vector (B, F) of the `Masked` model (1 keeps a feature, 0 puts
the baseline embedding at its tokens). `fattr/llm/run.py` runs them over all target tokens.
"""

from __future__ import annotations

import inspect
import numbers
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

import fattr
from fattr.errors import FattrError, FattrTypeError


@dataclass(frozen=True)
class Method:
    """How one method runs: its fattr constructor, whether it differentiates (x is the input
    embeddings) or perturbs (x is the presence vector), its per-call arguments, and whether it
    is linear in the score for the given constructor arguments."""

    build: Callable[..., Callable[..., Tensor]]
    gradient: bool
    per_call: tuple[str, ...] = ()
    renames: tuple[tuple[str, str], ...] = ()   # llm keyword -> fattr keyword
    linear: Callable[[dict], bool] = lambda kwargs: True
    logit_only: bool = False  # explains the logit (LRP redistributes the output itself)


METHODS = {
    "saliency": Method(fattr.saliency, True, linear=lambda kwargs: not kwargs.get("abs", True)),
    "input_x_gradient": Method(fattr.input_x_gradient, True),
    "integrated_gradients": Method(fattr.integrated_gradients, True, ("baseline",),
                                   (("quadrature", "method"),)),
    "gradient_shap": Method(fattr.gradient_shap, True, ("baselines", "generator")),
    "lrp": Method(lambda f, composite="attnlrp", **rules: fattr.lrp(f, composite, **rules),
                  True, logit_only=True),
    "feature_ablation": Method(fattr.feature_ablation, False, ("baseline",)),
    "shapley_value_sampling": Method(fattr.shapley_value_sampling, False,
                                     ("baseline", "generator")),
    "lime": Method(fattr.lime, False, ("baseline", "generator")),
    "kernel_shap": Method(fattr.kernel_shap, False, ("baseline", "generator")),
}


def method_named(method: Any, caller: str) -> Method:
    if method not in METHODS:
        raise FattrError(f"{caller}: unknown method {method!r}; choose one of "
                         f"{', '.join(METHODS)}.")
    return METHODS[method]


def constructor_kwargs(method: str, spec: Method, given: dict[str, Any],
                       batch_size: int | None, caller: str) -> dict[str, Any]:
    """`method_kwargs` (and `batch_size`) checked against the fattr constructor's arguments."""
    renamed = dict(spec.renames)
    if spec.logit_only:  # fattr.lrp: a composite and its rule parameters, nothing else checked
        return dict(given)
    taken = {n for n in inspect.signature(spec.build).parameters if n not in ("f", "output")}
    allowed = (taken - set(renamed.values()) - {"batch_size"}) | set(renamed)
    unknown = sorted(set(given) - allowed)
    if unknown:
        raise FattrTypeError(f"{caller}: method {method!r} takes no argument {unknown[0]!r}; its "
                             f"arguments are {', '.join(sorted(allowed | {'batch_size'}))} (see "
                             f"fattr.{spec.build.__name__}).")
    kwargs = {renamed.get(k, k): v for k, v in given.items()}
    if "batch_size" in taken:
        kwargs["batch_size"] = batch_size
    elif batch_size is not None:
        raise FattrError(f"{caller}: batch_size does nothing for fattr.{spec.build.__name__} "
                         "(one forward pass); leave it None.")
    return kwargs


def baseline_embedding(baseline: Any, embeddings: nn.Module, method: str,
                       caller: str) -> Tensor:
    """The baseline as an embedding (d,), or a distribution (K, d) for gradient_shap: a token
    id is embedded (None: id 0, captum's default)."""
    weight = embeddings.weight
    if baseline is None:
        baseline = 0
    if isinstance(baseline, Tensor) and not baseline.is_floating_point() and baseline.ndim == 0:
        baseline = int(baseline)
    if isinstance(baseline, numbers.Integral) and not isinstance(baseline, bool):
        if not 0 <= baseline < weight.shape[0]:
            raise FattrError(f"{caller}: baseline token id {baseline} is outside the vocabulary "
                             f"of {weight.shape[0]} ids.")
        with torch.no_grad():
            return embeddings(torch.tensor([int(baseline)], device=weight.device))[0]
    width, many = weight.shape[1], method == "gradient_shap"
    fits = isinstance(baseline, Tensor) and baseline.is_floating_point() and \
        baseline.shape[-1:] == (width,) and baseline.ndim in ((1, 2) if many else (1,))
    if not fits:
        got = tuple(baseline.shape) if isinstance(baseline, Tensor) else type(baseline).__name__
        also = f" (or a distribution (K, {width}) for gradient_shap)" if many else ""
        raise FattrError(f"{caller}: baseline must be a token id or an embedding of shape "
                         f"({width},){also}; got {got}.")
    return baseline.detach().to(weight.device, weight.dtype)
