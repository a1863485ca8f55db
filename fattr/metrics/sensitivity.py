"""Max-sensitivity (Yeh et al. 2019): the largest relative change of an attribution under noise."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor

from fattr.core.checks import check_count, check_input
from fattr.core.chunking import check_batch_size
from fattr.core.model import Params
from fattr.core.noise import attribute_samples
from fattr.core.targets import Target, TargetSpec
from fattr.errors import FattrError
from fattr.metrics.base import check_attr_fn
from fattr.metrics.infidelity import _check_perturbations


def sensitivity_max(attr_fn: Callable[..., Tensor], params: Params, x: Tensor,
                    target: TargetSpec = None, perturbations: Tensor | None = None,
                    radius: float = 0.02, samples: int = 10,
                    generator: torch.Generator | None = None, *, batch_size: int | None = None,
                    **per_call: Any) -> Tensor:
    """The largest relative change of the attribution over perturbations of the input.

        SENS_max(x) = max_d ||A(x + d) - A(x)||_F / ||A(x)||_F,   d ~ U[-radius, radius]^D

    (an attribution that is zero everywhere counts its norm as 1, as captum does).

    Args:
        attr_fn: any attribution function `attr(params, x, target, **per_call)`; per-call
            arguments (`baseline=`, ...) are passed through `**per_call`.
        params, x, target: as for `attr_fn`. For a per-example `attr_fn` x is one example.
        perturbations: d of shape (S, B, ...) (x~ = x + d), used as given. If None, S =
            `samples` draws uniform in [-radius, radius] from `generator` (captum's default
            perturbation).
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
    check_input(x, method)
    single = bool(getattr(attr_fn, "per_example", False))
    if not single:  # lists become tensors, so they repeat with the copies
        target = Target(target, x.shape[0], x.device, method).spec
        if x.shape[0] == 0:
            return x.new_zeros(0)
    if perturbations is None:
        check_count(samples, "samples", method)
        if not radius >= 0:
            raise FattrError(f"{method}: radius must be >= 0, got {radius!r}.")
        noise = torch.rand((samples, *x.shape), generator=generator, dtype=x.dtype,
                           device=x.device)
        perturbations = (2 * noise - 1) * radius
    else:
        batched_x = x.unsqueeze(0) if single else x
        perturbations = _check_perturbations(perturbations, batched_x, single, method)
        perturbations = perturbations.squeeze(1) if single else perturbations
    reference = attr_fn(params, x, target, **per_call)
    moved = attribute_samples(attr_fn, params, (x + perturbations,), target, per_call,
                              batch_size, True)[0]
    axes = 1 if single else 2
    change = (moved - reference).flatten(axes).norm(dim=-1)
    norm = reference.flatten(axes - 1).norm(dim=-1)
    return (change / torch.where(norm == 0, torch.ones_like(norm), norm)).amax(0)
