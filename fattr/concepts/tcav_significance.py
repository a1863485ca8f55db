"""TCAV's statistical test: is a concept's score different from that of random directions?"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import torch
from torch import Tensor

from fattr.concepts.cav import _classifier, fit_cav, layer_activations
from fattr.concepts.linear import Fit
from fattr.concepts.tcav import tcav
from fattr.core.chunking import check_batch_size
from fattr.core.model import ModelFn, Params
from fattr.core.targets import TargetSpec
from fattr.errors import FattrError
from fattr.layers.taps import LayerSpec


class Significance(NamedTuple):
    """TCAV scores of the concept against each random set (R - 1,), the two-sided p-value of
    Student's t-test against the random-vs-random scores, and those scores (R - 1,)."""

    scores: Tensor
    p_value: Tensor
    random_scores: Tensor


def tcav_significance(f: ModelFn, params: Params, layer: LayerSpec, concept_x: Tensor,
                      random_sets: Sequence[Tensor], x: Tensor, target: TargetSpec = None, *,
                      classifier: str | Fit = "logistic", test_fraction: float = 0.33,
                      batch_size: int | None = None, generator: torch.Generator | None = None,
                      output: Callable[[Any], Tensor] | None = None) -> Significance:
    """The TCAV significance test of Kim et al. (2018, section 3.2).

    With random sets R_0, ..., R_m: CAVs of the concept against R_1..R_m give m TCAV scores;
    CAVs of R_{i-1} (a random "concept") against R_i, i = 1..m, give m scores of random
    directions. A two-sided Student t-test (equal variances, scipy's `ttest_ind` default)
    compares the two; a small p-value says the concept's score is not what a random direction
    would get. Each random set plays the random concept once: with one fixed random concept
    (R_0 against every other set, the TCAV reference code) all m random scores share R_0's
    bias, and with sets of tens of examples the test then swings with the choice of R_0.

    Args:
        f, params: the model function and its parameters.
        layer: the layer for the CAVs (dotted name or submodule).
        concept_x: examples of the concept; random_sets: m + 1 >= 3 sets of random examples.
        x, target: the examples to score (usually of one class) and the target class.
        classifier, test_fraction, generator: as in `fattr.concepts.cav` (one generator draws
            every train/test split in turn).
        batch_size: the most inputs per forward pass.

    Returns `Significance(scores, p_value, random_scores)`.

    >>> res = fattr.concepts.tcav_significance(f, params, "layer3", stripes, randoms, zebras, 3)
    >>> res.scores.mean(), res.p_value

    Kim et al., TCAV (ICML 2018), https://arxiv.org/abs/1711.11279
    """
    fit = _classifier(classifier, "tcav_significance")
    batch_size = check_batch_size(batch_size, "tcav_significance")
    if isinstance(random_sets, Tensor) or not isinstance(random_sets, Sequence) \
            or len(random_sets) < 3:
        raise FattrError("tcav_significance: random_sets must be a list of at least 3 tensors "
                         "of random examples (one plays the random concept, the others are "
                         f"counterexamples), got {_describe(random_sets)}.")
    read, name = layer_activations(f, layer, batch_size, output, "tcav_significance")
    concept = read(params, concept_x)
    randoms = [read(params, r) for r in random_sets]
    concept_cavs = [fit_cav(concept, r, fit, test_fraction, generator, name)
                    for r in randoms[1:]]
    random_cavs = [fit_cav(a, r, fit, test_fraction, generator, name)
                   for a, r in itertools.pairwise(randoms)]
    scores = tcav(f, layer, concept_cavs, batch_size=batch_size, output=output)(params, x, target)
    baseline = tcav(f, layer, random_cavs, batch_size=batch_size, output=output)(params, x,
                                                                                 target)
    return Significance(scores, student_t_test(scores, baseline), baseline)


def student_t_test(a: Tensor, b: Tensor) -> Tensor:
    """Two-sided p-value of Student's t-test for equal means (pooled variance). Two samples
    that are constant give 1.0 when their means agree and 0.0 when they differ."""
    na, nb = a.numel(), b.numel()
    a, b = a.double(), b.double()
    df = na + nb - 2
    pooled = ((a - a.mean()).pow(2).sum() + (b - b.mean()).pow(2).sum()) / df
    diff = (a.mean() - b.mean()).item()
    if pooled.item() == 0.0:
        return torch.tensor(1.0 if diff == 0.0 else 0.0, dtype=torch.float64)
    t = diff / math.sqrt(pooled.item() * (1 / na + 1 / nb))
    try:
        from scipy.special import stdtr  # the Student t CDF
    except ImportError as error:
        raise FattrError("tcav_significance: the p-value needs scipy (pip install scipy).") \
            from error

    return torch.tensor(2.0 * stdtr(df, -abs(t)), dtype=torch.float64)


def _describe(value: object) -> str:
    return f"{len(value)} sets" if isinstance(value, Sequence) else type(value).__name__
