"""`fattr.lrp(f, composite)`: layer-wise relevance propagation as an attribution function, and
`fattr.lrp.model(f, composite)`: the model function whose input gradient is the relevance."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor

from fattr.core.gradients import input_gradient
from fattr.core.model import (
    Call,
    FunctionalModel,
    Model,
    ModelFn,
    Params,
    PerExample,
    as_model,
    attribution,
)
from fattr.errors import FattrError, FattrTypeError
from fattr.lrp.composites import Composite, resolve
from fattr.lrp.relevance import output_relevance
from fattr.lrp.tree import relevance_tree
from fattr.rules.apply import require_functional


class RelevanceModel:
    """`f` with relevance in the gradient slot: the same outputs, and
    `torch.func.grad(score)(x)` is the LRP relevance of `score` (the relevance at the output
    being the score's gradient times the output: the target logit for an int target)."""

    def __init__(self, base: FunctionalModel, composite: dict, canonize: bool,
                 output: Callable[[Any], Tensor] | None):
        self.base, self.composite, self.canonize, self.output = base, composite, canonize, output

    @property
    def module(self) -> torch.nn.Module:
        return self.base.module

    def tree(self) -> torch.nn.Module:
        """The rewritten copy of the user's module for one call."""
        return relevance_tree(self.module, self.composite, self.canonize)

    def __call__(self, params: Params, x: Tensor, *args: Any, **kwargs: Any) -> Tensor:
        out = torch.func.functional_call(self.tree(), dict(params), (x, *args), kwargs)
        if self.output is not None:
            out = self.output(out)
        if not isinstance(out, Tensor):
            raise FattrError(f"lrp: the model returned {type(out).__name__}, not a tensor. Pass "
                             "output=... to pick the tensor (e.g. output=lambda o: o.logits).")
        return output_relevance(out)

    def __repr__(self) -> str:
        return f"lrp.model({self.base!r})"


def _relevance_model(model: Model, composite: str | Composite, canonize: bool,
                     rule_params: dict[str, Any]) -> RelevanceModel:
    if not isinstance(canonize, bool):
        raise FattrTypeError(f"lrp: canonize must be True or False, got {canonize!r}.")
    relevance = RelevanceModel(require_functional(model), resolve(composite, rule_params),
                               canonize, model.output)
    relevance.tree()  # unsupported modules fail here, at construction
    return relevance


def model(f: ModelFn, composite: str | Composite = "epsilon_plus_flat", *, canonize: bool = True,
          output: Callable[[Any], Tensor] | None = None, **rule_params: Any) -> ModelFn:
    """The model `f` with LRP relevance in its gradient slot, for any gradient method.

    Returns a model function `g(params, x)` with `g(params, x) == f(params, x)` (after
    `output`), whose input gradient of a target score is the LRP relevance of that score, the
    relevance at the output being `score'(y) * y` (the logit itself for an int target). So
    `fattr.saliency(g, abs=False)` is `fattr.lrp(f)`, `fattr.integrated_gradients(g)` is
    zennit's `IntegratedGradients` with a composite, and `fattr.smoothgrad(fattr.lrp(f))` is
    SmoothGrad over relevance. Keeps `per_example` models per-example. Arguments as `fattr.lrp`.

    >>> g = fattr.lrp.model(f, "epsilon_plus")
    >>> ig = fattr.integrated_gradients(g, steps=16, method="riemann_right")
    """
    base = as_model(f, output, "lrp")
    relevance = _relevance_model(base, composite, canonize, rule_params)
    return PerExample(relevance) if base.per_example else relevance


def lrp(f: ModelFn, composite: str | Composite = "epsilon_plus_flat", *, canonize: bool = True,
        output: Callable[[Any], Tensor] | None = None, **rule_params: Any,
        ) -> Callable[..., Tensor]:
    """Layer-wise relevance propagation: the target score redistributed layer by layer onto the
    input, each layer by its rule.

        R_out = y_t (the target logit);   R_i = sum_j rule(x_i, w_ij, z_j) R_j layer by layer

    e.g. Epsilon: R_i = x_i sum_j w_ij R_j / (z_j + eps sign z_j); the rules are zennit's
    (fattr.lrp.Epsilon, Gamma, AlphaBeta, ZPlus, ZBox, Flat, WSquare, Pass, Norm).

    Args:
        f: a model from `fattr.functional(model)` (or `fattr.per_example` of one).
        composite: which rule each layer gets. A name: `epsilon_plus_flat` (default; zennit's
            EpsilonPlusFlat: Flat for the first Linear/conv layer, ZPlus for convolutions,
            Epsilon for Linear), `epsilon_plus`, `epsilon`, `epsilon_gamma_box` (ZBox for the
            first convolution, needs `low=`, `high=`; Gamma for the other convolutions),
            `epsilon_alpha2_beta1`, `epsilon_alpha2_beta1_flat`; for transformers (torchvision
            `VisionTransformer`) `attnlrp` (Achtibat et al. 2024) and `cp_lrp` (Ali et al.
            2022): `FrozenStd` for LayerNorm, `AttnLRP` or `CPLRP` for `nn.MultiheadAttention`,
            Epsilon for Linear, Pass for GELU (`fattr/lrp/attention.py`). Or a mapping from
            module type, tuple of types, dotted name or `fattr.lrp.first(types)` (the first
            such layer in EXECUTION order) to a rule, or to None for the plain gradient; after
            it come the base rules: activations Pass, sums and average pools Norm, BatchNorm Pass.
        canonize: fold eval BatchNorm into the Linear/conv layer before it (from the call's
            params) and turn torchvision ResNet residual adds into a Norm sum (default True).
            In-place modules are always made out-of-place. The user's model is never modified.
        output: picks a tensor from the model's output.
        **rule_params: for a named composite: `epsilon` (1e-6), `stabilizer` (1e-6, the other
            rules' epsilon), `gamma` (0.25), `low`, `high`.

    Returns `attr(params, x, target=None) -> Tensor` shaped like x: the relevance itself (the
    rules already include the input: zennit's modified gradient with initial relevance one-hot
    times the output, or captum's normalized relevance times the output). Differentiable in
    params and x (also the relevance with respect to the parameters, which zennit cannot do);
    works under `vmap` over targets and for `per_example` models. Functional activations and
    tensor additions in the forward get the rules of their module forms; modules and calls
    without an LRP rule in the composite (LayerNorm and attention outside `attnlrp`/`cp_lrp`,
    functional matmul and softmax) raise an error naming them. torch.compile: the layer rules
    are custom autograd Functions, which Dynamo does not trace (nor inside vmap, pytorch issue
    129845): a compiled call breaks the graph at each rule and runs them eagerly (same values);
    fullgraph=True fails.

    >>> attr = fattr.lrp(f, "epsilon_gamma_box", low=-2.1, high=2.6)
    >>> r = attr(params, x, target=labels)        # r.sum((1, 2, 3)) ~ the target logits

    Bach, Binder, Montavon, Klauschen, Mueller, Samek, "On Pixel-Wise Explanations for
    Non-Linear Classifier Decisions by Layer-Wise Relevance Propagation" (2015),
    https://doi.org/10.1371/journal.pone.0130140; Montavon, Binder, Lapuschkin, Samek, Mueller,
    "Layer-Wise Relevance Propagation: An Overview" (2019),
    https://doi.org/10.1007/978-3-030-28954-6_10; rules and composites as zennit (Anders et al.,
    https://arxiv.org/abs/2106.13200). Differences: BatchNorm is folded exactly (zennit's
    folded BatchNorm keeps a factor 1/sqrt(1 + eps)); "first layer" is the first to run, not
    the first registered; captum's LRP gives MaxPool and BatchNorm the Epsilon rule, fattr the
    plain gradient (winner takes all) and folding.
    """
    base = as_model(f, output, "lrp")
    relevance = Model(_relevance_model(base, composite, canonize, rule_params), None,
                      base.per_example, "lrp")

    def compute(params: Params, call: Call) -> Tensor:
        return input_gradient(relevance, params, call.x, call.target)[0]

    return attribution(base, compute, doc=lrp.__doc__)
