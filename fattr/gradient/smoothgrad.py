"""SmoothGrad, SmoothGrad^2 and VarGrad: one noise average with three reductions."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import torch
from torch import Tensor

from fattr.core.call import AttributionFn, Contract, contract
from fattr.core.checks import check_count, check_generator, check_non_negative
from fattr.core.chunking import check_batch_size
from fattr.core.inputs import as_inputs
from fattr.core.noise import attribute_samples, relative_noise
from fattr.core.targets import Target, TargetSpec
from fattr.errors import FattrError, FattrTypeError

Reduce = Callable[[Tensor], Tensor]


def _noise_average(name: str, reduce: Reduce, attr_fn: Callable[..., Any], samples: int,
                   stdev: float, batch_size: int | None) -> AttributionFn:
    if not callable(attr_fn):
        raise FattrTypeError(f"{name}: attr_fn must be an attribution function such as "
                             f"fattr.saliency(f), got {type(attr_fn).__name__}.")
    if isinstance(attr_fn, torch.nn.Module) or hasattr(attr_fn, "module"):
        raise FattrTypeError(
            f"{name}: attr_fn must be an attribution function such as fattr.saliency(f), got a "
            "model. Wrap a method built on the model: "
            f"fattr.{name}(fattr.saliency(f), samples=...)(params, x, target).")
    check_count(samples, "samples", name)
    check_non_negative(stdev, "stdev", name)  # a fraction of each example's value range
    check_batch_size(batch_size, name)
    inner = contract(attr_fn)
    batched = not inner.per_example

    def attribute(params: Mapping[str, Tensor], x: Any, target: TargetSpec = None, *,
                  generator: torch.Generator | None = None, **per_call: Any) -> Any:
        check_generator(generator, name)
        inputs, single = as_inputs(x, name)
        if batched:
            target = Target(target, inputs[0].shape[0], inputs[0].device, name).spec  # lists
            if inputs[0].shape[0] == 0:
                return attr_fn(params, x, target, **per_call)
        noisy = tuple(t + relative_noise(t, samples, stdev, generator, batched) for t in inputs)
        try:
            copies = attribute_samples(attr_fn, params, noisy, target, per_call, batch_size,
                                       single)
        except FattrError as err:  # the inner method saw samples * B rows: say so
            raise type(err)(f"{name}: on the {samples} noisy copies of each example: {err}") \
                from err
        result = tuple(reduce(c) for c in copies)
        return result[0] if single else result

    keywords = None if inner.keywords is None else (*inner.keywords, "generator")
    return AttributionFn(attribute, name, Contract(inner.per_example, inner.batched_kwargs,
                                                   keywords))


def smoothgrad(attr_fn: Callable[..., Tensor], samples: int = 50, stdev: float = 0.15,
               batch_size: int | None = None) -> Callable[..., Tensor]:
    """The mean attribution over noisy copies of the input (SmoothGrad).

        SG(x) = 1/n sum_i A(x + e_i),  e_i ~ N(0, (stdev * (max(x) - min(x)))^2)

    Wraps ANY attribution function `A` (saliency, IG, an LRP or guided model...).

    Args:
        attr_fn: `attr(params, x, target, **per_call)`, e.g. `fattr.saliency(f, abs=False)`.
        samples: noisy copies per example (default 50).
        stdev: noise level relative to each example's value range, max - min (PAIR's
            convention, default 0.15). captum's NoiseTunnel takes an absolute stdev instead:
            pass stdev / (x.max() - x.min()) for the same noise.
        batch_size: the most noisy copies per call of `attr_fn`; the result does not depend on
            it.

    Returns `attr(params, x, target=None, *, generator=None, **per_call)` shaped like x. Noise
    comes from `generator` (the global RNG if None), drawn once before any evaluation. Per-call
    arguments such as `baseline` pass through to `attr_fn`. Inside `vmap`, pass
    `randomness="same"` or `"different"` to vmap.

    Smilkov, Thorat, Kim, Viegas, Wattenberg, "SmoothGrad: removing noise by adding noise"
    (2017), https://arxiv.org/abs/1706.03825
    """
    return _noise_average("smoothgrad", lambda a: a.mean(0), attr_fn, samples, stdev, batch_size)


def smoothgrad_sq(attr_fn: Callable[..., Tensor], samples: int = 50, stdev: float = 0.15,
                  batch_size: int | None = None) -> Callable[..., Tensor]:
    """The mean SQUARED attribution over noisy copies (SmoothGrad^2, Hooker et al. 2019).

    Same arguments as `smoothgrad`. https://arxiv.org/abs/1806.10758
    """
    return _noise_average("smoothgrad_sq", lambda a: a.square().mean(0), attr_fn, samples,
                          stdev, batch_size)


def vargrad(attr_fn: Callable[..., Tensor], samples: int = 50, stdev: float = 0.15,
            batch_size: int | None = None) -> Callable[..., Tensor]:
    """The variance of the attribution over noisy copies (VarGrad, Adebayo et al. 2018).

    Population variance (divides by `samples`, as PAIR and captum). Same arguments as
    `smoothgrad`. https://arxiv.org/abs/1810.03307
    """
    return _noise_average("vargrad", lambda a: a.var(0, correction=0), attr_fn, samples, stdev,
                          batch_size)
