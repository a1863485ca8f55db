"""DeepLiftShap: DeepLIFT averaged over a distribution of references (Lundberg and Lee 2017)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from torch import Tensor

from fattr.core.baselines import distributions_for
from fattr.core.call import Call, attribution
from fattr.core.chunking import check_batch_size, path_sum
from fattr.core.model import ModelFn, Params, as_model
from fattr.errors import FattrError
from fattr.rules.deeplift import check_eps, pair_attribution, rescaled


def deeplift_shap(f: ModelFn, eps: float = 1e-10, batch_size: int | None = None, *,
                  output: Callable[[Any], Tensor] | None = None) -> Callable[..., Tensor]:
    """The mean of DeepLIFT attributions over N references:

        attr(x) = 1/N sum_n deeplift(x, baseline=b_n)

    Every (example, reference) pair is one half of a doubled batch, so N references cost one
    forward and backward of 2 N B rows (in chunks of `batch_size`). The rules, their coverage
    and their differences from captum are those of `fattr.deeplift`.

    Args:
        f: a model from `fattr.functional(model)` (or `fattr.per_example` of one).
        eps: see `fattr.deeplift` (default 1e-10).
        batch_size: the most model inputs per forward call, an even number >= 2 (each pair
            takes two rows); None sends all 2 N B rows at once. Results do not depend on it.
        output: picks a tensor from the model's output.

    Returns `attr(params, x, target=None, baselines=None)` shaped like x; `baselines` is a
    distribution of shape (N, *x.shape[1:]) (None: one zero reference). Unlike captum, N = 1
    is allowed (it equals `deeplift`).

    torch.compile: the rules are custom autograd Functions, which Dynamo does not trace (nor
    inside vmap, pytorch issue 129845): inside a compiled caller the whole call runs
    uncompiled (one graph break, same values); fullgraph=True refuses it.

    >>> a = fattr.deeplift_shap(f)(params, x, target=labels, baselines=background[:16])

    Lundberg and Lee, "A Unified Approach to Interpreting Model Predictions" (2017),
    https://arxiv.org/abs/1705.07874
    """
    eps = check_eps(eps, "deeplift_shap")
    check_batch_size(batch_size, "deeplift_shap")
    if batch_size is not None and batch_size < 2:
        raise FattrError("deeplift_shap: batch_size must be at least 2 (an input and its "
                         f"reference are two rows of one forward), got {batch_size}.")
    pairs = None if batch_size is None else batch_size // 2
    model = as_model(f, output, "deeplift_shap")
    ruled = rescaled(model, eps)

    def compute(params: Params, call: Call, baselines: Tensor | tuple | None = None) -> Tensor:
        xs = call.inputs
        pools = distributions_for(baselines, xs, "deeplift_shap")
        count = pools[0].shape[0]

        def pair(reference: Tensor, example: Tensor) -> tuple[Tensor, ...]:
            rows = tuple(x[example] for x in xs)
            refs = tuple(pool[reference] for pool in pools)
            attributions = pair_attribution(ruled, params, call, rows, refs, example)
            return tuple(a / count for a in attributions)

        return call.unpack(path_sum(pair, count, call.batch, pairs, xs[0].device))

    return attribution(model, compute, doc=deeplift_shap.__doc__, compilable=False)
