"""`fattr.lrp(f, composite)`: layer-wise relevance propagation as an attribution function, and
`fattr.lrp.model(f, composite)`: the model function whose input gradient is the relevance."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor

from fattr.core.call import Call, attribution
from fattr.core.gradients import input_gradient
from fattr.core.model import (
    FunctionalModel,
    Model,
    ModelFn,
    Params,
    PerExample,
    as_model,
    call_module,
)
from fattr.errors import FattrError, FattrTypeError
from fattr.lrp.composites import Composite, resolve
from fattr.lrp.efficient import gradient_tree, single_backward
from fattr.lrp.modified import times_input
from fattr.lrp.relevance import output_relevance
from fattr.lrp.tree import relevance_tree
from fattr.rules.apply import require_functional


class RelevanceModel:
    """`f` with relevance in the gradient slot: the same outputs, and
    `torch.func.grad(score)(x)` is the LRP relevance of `score` (the relevance at the output
    being the score's gradient times the output: the target logit for an int target).

    A composite with an attention rule whose rules all have a Gradient x Input form runs in one
    forward and one backward (`fattr.lrp.efficient`): the gradient slot carries the modified
    gradient and the input multiplies it in (`times_input`). Other composites hand relevance
    down layer by layer (`fattr.lrp.tree`)."""

    def __init__(self, base: FunctionalModel, composite: dict, canonize: bool,
                 output: Callable[[Any], Tensor] | None):
        self.base, self.composite, self.canonize, self.output = base, composite, canonize, output
        self.single_backward = single_backward(composite)

    @property
    def module(self) -> torch.nn.Module:
        return self.base.module

    def tree(self) -> torch.nn.Module:
        """The rewritten copy of the user's module for one call."""
        if self.single_backward:
            return gradient_tree(self.module, self.composite)
        return relevance_tree(self.module, self.composite, self.canonize)

    def __call__(self, params: Params, x: Tensor | tuple[Tensor, ...], *args: Any,
                 **kwargs: Any) -> Tensor:
        if self.single_backward:
            x = tuple(times_input(t) for t in x) if isinstance(x, tuple) else times_input(x)
        out = call_module(self.tree(), self.module, params, x, args, kwargs)
        if self.output is not None:
            out = self.output(out)
        if not isinstance(out, Tensor):
            raise FattrError(f"lrp: the model returned {type(out).__name__}, not a tensor. Pass "
                             "output=... to pick the tensor (e.g. output=lambda o: o.logits).")
        return out if self.single_backward else output_relevance(out)

    def __repr__(self) -> str:
        return f"lrp.model({self.base!r})"


def _relevance_model(model: Model, composite: str | Composite, canonize: bool,
                     rule_params: dict[str, Any]) -> RelevanceModel:
    if not isinstance(canonize, bool):
        raise FattrTypeError(f"lrp: canonize must be True or False, got {canonize!r}.")
    base = require_functional(model)
    resolved = resolve(composite, rule_params)
    check_names(resolved, base.module)
    relevance = RelevanceModel(base, resolved, canonize, model.output)
    relevance.tree()  # unsupported modules fail here, at construction
    return relevance


def check_names(composite: dict, module: torch.nn.Module) -> None:
    """Every dotted name the composite maps is a module of the model (else it would silently
    match nothing)."""
    names = {name for name, _ in module.named_modules()}
    for key in composite:
        if isinstance(key, str) and key not in names:
            known = sorted(n for n in names if n)[:6]
            raise FattrError(f"lrp: the composite maps the layer name {key!r}, which the model "
                             f"does not have; names are those of model.named_modules(), e.g. "
                             f"{known}.")


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
            `epsilon_alpha2_beta1`, `epsilon_alpha2_beta1_flat`; for transformers `attnlrp`
            (Achtibat et al. 2024) and `cp_lrp` (Ali et al. 2022): the uniform rule on products
            and attention (CP-LRP: attention weights and gates constant), FrozenStd for
            LayerNorm and RMSNorm, the identity rule for activations, Epsilon for Linear. These
            run as ONE forward and ONE backward on the model's own code (torchvision ViT and
            nn.MultiheadAttention, HuggingFace Llama, Qwen, Gemma, GPT-2 and BERT with eager or
            SDPA attention, timm ViT, DeiT and Swin; see `fattr/lrp/efficient.py`). Or a mapping
            from module type, tuple of types, dotted name or `fattr.lrp.first(types)` (the first
            such layer in EXECUTION order) to a rule, or to None for the plain gradient; after
            it come the base rules: activations (torch's, transformers', timm's) Pass, sums and
            average pools Norm, BatchNorm Pass, LayerNorm FrozenStd.
        canonize: fold eval BatchNorm into the Linear/conv layer before it (from the call's
            params; timm's BatchNormAct2d keeps its activation) and turn torchvision ResNet
            residual adds into a Norm sum (default True; the single-backward form needs
            neither). In-place modules are always made out-of-place. The user's model is never
            modified: no class is patched, the rules act on a copy of its module tree.
        output: picks a tensor from the model's output.
        **rule_params: for a named composite: `epsilon` (1e-6; 0 for `attnlrp` and `cp_lrp`,
            as lxt: nothing divides in their form), `stabilizer` (the same defaults, the other
            rules' epsilon), `gamma` (0.25), `low`, `high`.

    Returns `attr(params, x, target=None) -> Tensor` shaped like x: the relevance itself (the
    rules already include the input: zennit's modified gradient with initial relevance one-hot
    times the output, or captum's normalized relevance times the output). Differentiable in
    params and x (also the relevance with respect to the parameters, which zennit cannot do);
    works under `vmap` over targets and for `per_example` models. Functional activations,
    products, sums and pooling in the forward get the rules of their module forms; modules and
    calls without an LRP rule in the composite (attention outside `attnlrp`/`cp_lrp`, `exp`,
    a division by the input's values, a fused LSTM) raise an error naming them, never a
    silent plain gradient. A model over input embeddings works as any model: wrap it as
    `forward(embeds, attention_mask)` returning `model(inputs_embeds=embeds, ...).logits`.
    torch.compile: the rules are custom autograd Functions, which Dynamo does not trace (nor
    inside vmap, pytorch issue 129845): inside a compiled caller the whole call runs
    uncompiled (one graph break, same values); fullgraph=True refuses it.

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
    plain gradient (winner takes all) and folding. AttnLRP/CP-LRP equal lxt's efficient rules
    (Achtibat et al., https://arxiv.org/abs/2402.05602; Ali et al.,
    https://arxiv.org/abs/2202.07304), without patching classes, differentiable in the
    parameters and under `vmap`; normalizations written out (HuggingFace's RMSNorm) compute in
    at least the input's precision (float64 stays float64 where transformers uses float32).
    """
    base = as_model(f, output, "lrp")
    relevance = Model(_relevance_model(base, composite, canonize, rule_params), None,
                      base.per_example, "lrp")

    def compute(params: Params, call: Call) -> Tensor:
        return call.unpack(input_gradient(relevance, params, call.inputs, call)[0])

    return attribution(base, compute, doc=lrp.__doc__, compilable=False)
