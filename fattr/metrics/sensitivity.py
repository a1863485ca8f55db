"""Max-sensitivity (Yeh et al. 2019): the largest relative change of an attribution under noise."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor

from fattr.core.call import contract
from fattr.core.checks import check_count, check_generator, check_non_negative
from fattr.core.chunking import check_batch_size
from fattr.core.inputs import Inputs, as_inputs
from fattr.core.model import Params
from fattr.core.noise import attribute_samples
from fattr.core.targets import Target, TargetSpec
from fattr.metrics.base import as_result, check_attr_fn, perturbations_for


def sensitivity_max(attr_fn: Callable[..., Any], params: Params, x: Tensor | Inputs,
                    target: TargetSpec = None, perturbations: Tensor | Inputs | None = None,
                    radius: float = 0.02, samples: int = 10,
                    generator: torch.Generator | None = None, *, batch_size: int | None = None,
                    **per_call: Any) -> Tensor:
    """The largest relative change of the attribution over perturbations of the input.

        SENS_max(x) = max_d ||A(x + d) - A(x)||_F / ||A(x)||_F,   d ~ U[-radius, radius]^D

    (an attribution that is zero everywhere counts its norm as 1, as captum does). For a tuple
    x every input is perturbed and the norms run over the attributions of all inputs together.

    Args:
        attr_fn: any attribution function `attr(params, x, target, **per_call)`; per-call
            arguments (`baseline=`, `model_args=`, `model_kwargs=`, ...) are passed through
            `**per_call`; per-example tensors among them (first axis B, such as an attention
            mask) follow their example through the perturbed copies.
        params, x, target: as for `attr_fn`; x is a tensor or a tuple of tensors. For a
            per-example `attr_fn` x is one example.
        perturbations: d of shape (S, B, ...) (x~ = x + d; a tuple, one per input, for a
            tuple x), used as given. If None, S = `samples` draws uniform in [-radius, radius]
            from `generator` (captum's default perturbation).
        radius: half-width of the L-inf ball of the drawn perturbations (default 0.02).
        samples: perturbations drawn per example (default 10, as captum).
        batch_size: the most perturbed copies per call of `attr_fn`; the result does not
            depend on it.

    Returns a Tensor (B,) (lower is more robust); one value for a per-example `attr_fn`.

    >>> sens = fattr.metrics.sensitivity_max(fattr.saliency(f), params, x, labels)

    captum: `captum.metrics.sensitivity_max(lambda x, target: attr(x, target), x, perturb_func,
    target=t)` with the same perturbations gives the same values.

    Yeh, Hsieh, Suggala, Inouye, Ravikumar, "On the (In)fidelity and Sensitivity of
    Explanations" (2019), https://arxiv.org/abs/1901.09392
    """
    method = "sensitivity_max"
    check_attr_fn(attr_fn, method)
    check_batch_size(batch_size, method)
    check_generator(generator, method)
    inputs, single = as_inputs(x, method)
    one = contract(attr_fn).per_example
    if not one:  # lists become tensors, so they repeat with the copies
        target = Target(target, inputs[0].shape[0], inputs[0].device, method).spec
        if inputs[0].shape[0] == 0:
            return inputs[0].new_zeros(0)
    if perturbations is None:
        check_count(samples, "samples", method)
        check_non_negative(radius, "radius", method)
        draw = lambda t: torch.rand((samples, *t.shape), generator=generator, dtype=t.dtype,
                                    device=t.device)
        moves = tuple((2 * draw(t) - 1) * radius for t in inputs)
    else:
        moves = perturbations_for(perturbations, inputs, single, method)
    reference = as_result(attr_fn(params, x, target, **per_call), len(inputs), single, method)
    moved = attribute_samples(attr_fn, params, tuple(t + m for t, m in zip(inputs, moves)),
                              target, per_call, batch_size, single)
    axes = 1 if one else 2
    change = torch.cat([(b - a).flatten(axes) for a, b in zip(reference, moved)], -1)
    norm = torch.cat([a.flatten(axes - 1) for a in reference], -1).norm(dim=-1)
    return (change.norm(dim=-1) / torch.where(norm == 0, torch.ones_like(norm), norm)).amax(0)
