"""TracIn's per-checkpoint gradient features, shared by `tracin` and `self_influence`.

Each example gets, per checkpoint c, feature terms whose inner products give the inner
product of its loss gradients: TracInCP has one single-factor term per parameter (its
flattened per-example gradient; one term for all with a random projection), TracInCPFast one
term of two factors (the output gradient d and the input a of the last linear layer, whose
product d a^T is the weight gradient). Influence is then

    TracIn(z, z') = sum_c lr_c sum_t prod_k <phi_ctk(z), phi_ctk(z')>

and self-influence is the same with z' = z.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Mapping, Sequence

import torch
from torch import Tensor, nn

from fattr.core.checks import check_eval_mode
from fattr.core.chunking import check_batch_size
from fattr.core.model import ModelFn, as_model, trainable
from fattr.errors import FattrError, FattrTypeError
from fattr.influence.affine import Reused, affine_gradients, affine_layers, usable
from fattr.influence.data import Data, chunks
from fattr.influence.gradients import Loss, per_example_gradients
from fattr.influence.last_layer import linear_factors
from fattr.layers.taps import LayerSpec, layer_name

Terms = list[list[Tensor]]  # terms of factors, (N, D_k) each


class TracInFeatures:
    """The validated configuration of a TracIn method and the features it computes."""

    def __init__(self, f: ModelFn, checkpoints: Sequence[Mapping[str, Tensor]], loss: Loss, *,
                 learning_rates: float | Sequence[float] | Tensor | None,
                 layers: LayerSpec | Sequence[LayerSpec] | None, last_layer: LayerSpec | None,
                 projection_dim: int | None, batch_size: int | None,
                 generator: torch.Generator | None, method: str):
        self.method = method
        self.model = as_model(f, None, method)
        self.checkpoints = _checked_checkpoints(checkpoints, method)
        self.learning_rates = _checked_rates(learning_rates, len(self.checkpoints), method)
        if not callable(loss):
            raise FattrTypeError(f"{method}: loss must be callable as loss(out, y) -> the loss "
                                 f"summed over the batch, got {type(loss).__name__}.")
        self.loss = loss
        self.batch_size = check_batch_size(batch_size, method)
        if projection_dim is not None and (isinstance(projection_dim, bool) or not isinstance(
                projection_dim, int) or projection_dim < 1):
            raise FattrError(f"{method}: projection_dim must be a positive int or None, got "
                             f"{projection_dim!r}.")
        if layers is not None and last_layer is not None:
            raise FattrError(f"{method}: pass layers= (TracInCP on those layers) or "
                             "last_layer= (TracInCPFast), not both.")
        first = self.checkpoints[0]
        if last_layer is not None:
            self.last_layer: str | None = self._linear(last_layer)
            self.names: list[str] = []
            weight = first[f"{self.last_layer}.weight"]
            dims = list(weight.shape)  # (out, in): the factors d and a
        else:
            self.last_layer = None
            self.names = self._parameter_names(layers)
            weight = first[self.names[0]]
            dims = [sum(first[k].numel() for k in self.names)]
        self.affine = affine_layers(self.model, self.names) if self.names else None
        self.projections = _projections(dims, projection_dim, weight, generator)

    def _parameter_names(self, layers: LayerSpec | Sequence[LayerSpec] | None) -> list[str]:
        names = list(trainable(self.model.fn, self.checkpoints[0]))
        if layers is not None:
            module = self.model.require_module()
            chosen = [layer_name(module, layer, self.method)
                      for layer in (layers if isinstance(layers, (list, tuple)) else [layers])]
            prefixes = tuple(f"{c}." if c else "" for c in chosen)
            names = [n for n in names if n.startswith(prefixes)]
        if not names:
            raise FattrError(f"{self.method}: no trainable parameters to differentiate"
                             f"{' in layers ' + repr(layers) if layers is not None else ''}; "
                             "pick layers that hold parameters.")
        for i, checkpoint in enumerate(self.checkpoints):
            missing = [n for n in names if n not in checkpoint]
            if missing:
                raise FattrError(f"{self.method}: checkpoint {i} has no entry {missing[0]!r}; "
                                 "every checkpoint must be a full params dict, as "
                                 "fattr.functional(model)[1] gives.")
        return names

    def _linear(self, layer: LayerSpec) -> str:
        module = self.model.require_module()
        name = layer_name(module, layer, self.method)
        sub = dict(module.named_modules())[name]
        if not isinstance(sub, nn.Linear):
            raise FattrError(f"{self.method}: last_layer must be an nn.Linear (TracInCPFast "
                             f"factors its weight gradient), got {type(sub).__name__} at "
                             f"{name!r}. Use layers=[{name!r}] for the general form.")
        for i, checkpoint in enumerate(self.checkpoints):
            if f"{name}.weight" not in checkpoint:
                raise FattrError(f"{self.method}: checkpoint {i} has no entry '{name}.weight'.")
        return name

    def chunk(self, c: int, x: Tensor, y: Tensor) -> Terms:
        """The feature terms of checkpoint c for one chunk of rows."""
        params = self.checkpoints[c]
        if self.last_layer is not None:
            d, a = linear_factors(self.model, self.loss, params, self.last_layer, x, y)
            if self.projections is not None:
                d, a = d @ self.projections[0], a @ self.projections[1]
            return [[d, a]]
        grads = [g.flatten(1) for g in self._gradients(params, x, y).values()]
        if self.projections is None:
            return [[g] for g in grads]  # one term per parameter: no (B, P) copy is made
        blocks = self.projections[0].split([g.shape[1] for g in grads])
        return [[sum(g @ r for g, r in zip(grads, blocks))]]

    def _gradients(self, params: Mapping[str, Tensor], x: Tensor, y: Tensor,
                   ) -> dict[str, Tensor]:
        """Per-example gradients: from one backward pass for Linear/Conv2d models
        (`fattr.influence.affine`), else from vmap(grad)."""
        if self.affine is not None and usable(params, x):
            try:
                return affine_gradients(self.model, self.loss, params, self.affine, self.names,
                                        x, y)
            except Reused:
                self.affine = None
        return per_example_gradients(self.model, self.loss, params, self.names, x, y)

    def all_rows(self, x: Data, y: Tensor | None) -> list[Terms]:
        """Per checkpoint, the feature terms of every row (the test side, held in memory)."""
        check_eval_mode(self.model.module, self.method)
        parts = [[self.chunk(c, bx, by) for c in range(len(self.checkpoints))]
                 for bx, by in chunks(x, y, self.batch_size, self.method)]
        if not parts:
            raise FattrError(f"{self.method}: no rows to score (empty data).")
        return [[[torch.cat([p[c][t][k] for p in parts]) for k in range(len(term))]
                 for t, term in enumerate(parts[0][c])] for c in range(len(self.checkpoints))]

    def influence(self, test: list[Terms], x: Tensor, y: Tensor) -> Tensor:
        """(n_test, B): TracIn of each row of the chunk (x, y) on each test example."""
        total = None
        for c, rate in enumerate(self.learning_rates):
            term = _inner(test[c], self.chunk(c, x, y)) * rate
            total = term if total is None else total + term
        return total

    def self_influence(self, x: Tensor, y: Tensor) -> Tensor:
        """(B,): sum_c lr_c |grad loss|^2 for each row of the chunk."""
        total = None
        for c, rate in enumerate(self.learning_rates):
            term = sum(math.prod(f.pow(2).sum(1) for f in factors)
                       for factors in self.chunk(c, x, y)) * rate
            total = term if total is None else total + term
        return total


def _inner(a: Terms, b: Terms) -> Tensor:
    """sum_t prod_k a_tk @ b_tk^T: the inner products of the features, (N_a, N_b)."""
    return sum(math.prod(u @ v.T for u, v in zip(fa, fb)) for fa, fb in zip(a, b))


def _checked_checkpoints(checkpoints: object, method: str) -> list[Mapping[str, Tensor]]:
    if isinstance(checkpoints, Mapping) or not isinstance(checkpoints, Sequence) \
            or not checkpoints or not all(isinstance(c, Mapping) for c in checkpoints):
        raise FattrTypeError(
            f"{method}: checkpoints must be a non-empty list of params dicts (one per saved "
            "checkpoint, as fattr.functional(model)[1] gives, cloned at each save); got "
            f"{type(checkpoints).__name__}.")
    return list(checkpoints)


def _checked_rates(rates: object, count: int, method: str) -> list[float]:
    if rates is None:
        return [1.0] * count
    if isinstance(rates, Tensor):
        rates = rates.tolist() if rates.ndim else [rates.item()] * count
    if isinstance(rates, numbers.Real) and not isinstance(rates, bool):
        rates = [float(rates)] * count
    if not isinstance(rates, Sequence) or len(rates) != count or not all(
            isinstance(r, numbers.Real) and not isinstance(r, bool) and math.isfinite(r)
            for r in rates):
        raise FattrError(f"{method}: learning_rates must be one finite number or one per "
                         f"checkpoint ({count}), got {rates!r}.")
    return [float(r) for r in rates]


def _projections(dims: list[int], projection_dim: int | None, like: Tensor,
                 generator: torch.Generator | None) -> list[Tensor] | None:
    """Gaussian projections N(0, 1/k) of each factor, or None where none is needed.

    One factor of D dims goes to k = projection_dim; two factors (out, in) go to
    k = int(sqrt(projection_dim)) each, so that their product has about projection_dim
    dims (captum's TracInCPFastRandProj). Nothing is projected when the product of the
    dims is already at most projection_dim.
    """
    if projection_dim is None or math.prod(dims) <= projection_dim:
        return None
    k = projection_dim if len(dims) == 1 else math.isqrt(projection_dim)
    device = generator.device if generator is not None else torch.device("cpu")
    mats = []
    for dim in dims:
        size = min(k, dim)
        r = torch.randn(dim, size, generator=generator, device=device, dtype=torch.float64)
        mats.append((r / math.sqrt(size)).to(dtype=like.dtype, device=like.device))
    return mats
