"""Concept activation vectors: the normal of a linear boundary between a concept's layer
activations and random ones (Kim et al. 2018)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from fattr.concepts.linear import CLASSIFIERS, Fit
from fattr.core.chunking import check_batch_size, chunked
from fattr.core.model import ModelFn, Params, as_model
from fattr.errors import FattrError, FattrTypeError
from fattr.layers.layer_activation import layer_activation
from fattr.layers.taps import LayerSpec, layer_name


@dataclass(frozen=True)
class CAV:
    """A concept activation vector: `vector` (D,), unit length, over the flattened layer
    output, pointing towards the concept; `accuracy` of the classifier on held-out examples;
    `layer` the layer it lives in."""

    vector: Tensor
    accuracy: Tensor
    layer: str


def cav(f: ModelFn, params: Params, layer: LayerSpec, concept_x: Tensor, random_x: Tensor, *,
        classifier: str | Fit = "logistic", test_fraction: float = 0.33,
        batch_size: int | None = None, generator: torch.Generator | None = None,
        output: Callable[[Any], Tensor] | None = None) -> CAV:
    """Train a linear classifier that separates `layer`'s activations of `concept_x` (label 1)
    from those of `random_x` (label 0); the CAV is its unit normal,

        v = w / |w|   with   w.h(x) + b > 0  for the concept,  h = flattened layer output.

    Args:
        f, params: the model function (from `fattr.functional`) and its parameters.
        layer: dotted name from `model.named_modules()`, or the submodule.
        concept_x, random_x: example inputs of the concept and random counterexamples (at
            least 2 each).
        classifier: "logistic" (L2-regularized logistic regression by L-BFGS, alpha = 0.01,
            default), "ridge" (least squares on +-1 labels, closed form), or a callable
            `fit(activations (N, D), labels (N,)) -> (w (D,), b)`.
        test_fraction: share of the examples held out for `accuracy` (default 0.33, captum's).
        batch_size: the most inputs per forward pass when reading activations.
        generator: draws the train/test split.

    Returns a `CAV` (`.vector` (D,), `.accuracy` (0-d tensor), `.layer`).

    >>> c = fattr.concepts.cav(f, params, "layer3", striped_images, random_images)
    >>> c.accuracy                       # held-out accuracy of the linear classifier
    >>> fattr.concepts.tcav(f, "layer3", [c])(params, zebras, target=zebra_class)

    Differs from captum: captum's default classifier is scikit-learn's SGDClassifier (random
    shuffles, no convergence guarantee); fattr solves the regularized problem to convergence,
    so the same data and split give the same vector.

    Kim et al., "Interpretability Beyond Feature Attribution: Quantitative Testing with
    Concept Activation Vectors (TCAV)" (ICML 2018), https://arxiv.org/abs/1711.11279
    """
    fit = _classifier(classifier, "cav")
    batch_size = check_batch_size(batch_size, "cav")
    read, name = layer_activations(f, layer, batch_size, output, "cav")
    return fit_cav(read(params, concept_x), read(params, random_x), fit, test_fraction,
                   generator, name)


def layer_activations(f: ModelFn, layer: LayerSpec, batch_size: int | None,
                      output: Callable[[Any], Tensor] | None, method: str,
                      ) -> tuple[Callable[[Params, Tensor], Tensor], str]:
    """(`read(params, x) -> (N, D)`, the layer's dotted name): the flattened layer output,
    `batch_size` inputs at a time."""
    name = layer_name(as_model(f, output, method).require_module(), layer, method)
    acts = layer_activation(f, layer, output=output)

    def read(params: Params, x: Tensor) -> Tensor:
        if not isinstance(x, Tensor) or x.ndim == 0 or x.shape[0] < 2:
            shape = tuple(x.shape) if isinstance(x, Tensor) else type(x).__name__
            raise FattrError(f"{method}: each set of examples needs at least 2 rows (a batch "
                             f"axis first), got {shape}.")
        with torch.no_grad():
            return chunked(lambda rows: acts(params, rows).flatten(1), x, batch_size=batch_size)

    return read, name


def fit_cav(concept: Tensor, random: Tensor, fit: Fit, test_fraction: float,
            generator: torch.Generator | None, layer: str) -> CAV:
    """The CAV from concept and random activations (N, D): a seeded split, a fit, a test."""
    if not (isinstance(test_fraction, float) and 0.0 < test_fraction < 1.0):
        raise FattrError(f"cav: test_fraction must be a float between 0 and 1, got "
                         f"{test_fraction!r}.")
    x = torch.cat([concept, random])
    labels = torch.cat([torch.ones(len(concept)), torch.zeros(len(random))]).to(x.device)
    order = torch.randperm(len(x), generator=generator, device="cpu").to(x.device)
    held = max(1, int(test_fraction * len(x)))
    test, train = order[:held], order[held:]
    if labels[train].min() == labels[train].max():
        raise FattrError("cav: the training split holds one class only; pass more concept and "
                         "random examples or a smaller test_fraction.")
    w, b = fit(x[train], labels[train])
    norm = w.norm()
    if not bool(norm > 0):
        raise FattrError("cav: the classifier returned a zero vector; the concept and random "
                         "activations may be identical at this layer.")
    accuracy = ((x[test] @ w + b > 0).float() == labels[test]).float().mean()
    return CAV(w / norm, accuracy, layer)


def _classifier(classifier: str | Fit, method: str) -> Fit:
    if callable(classifier):
        return classifier
    if classifier not in CLASSIFIERS:
        raise FattrTypeError(f"{method}: classifier must be one of {sorted(CLASSIFIERS)} or a "
                             f"callable fit(activations, labels) -> (w, b), got {classifier!r}.")
    return CLASSIFIERS[classifier]
