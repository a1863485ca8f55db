"""Parity with captum 0.9 on the same models and inputs (float64 models and inputs).

captum rounds some results to float32 (Occlusion divides in float32, Shapley sampling
accumulates in float32, Lime and KernelShap fit sklearn models on float32 data), so those
comparisons allow ~1e-6 relative error; fattr's own float64 definitions are checked tightly in
test_definitions.py. Random draws are made comparable by handing captum fattr's draws: the
permutations of FeaturePermutation through `perm_func`, the orderings of
ShapleyValueSampling through its `permutation_generator`, the coalitions of KernelShap and
Lime through `perturb_func`. fattr exposes its draw functions for exactly this.
"""

from __future__ import annotations

import math

import captum.attr as ca
import pytest
import torch
from captum._utils.models.linear_model import SkLearnRidge

import fattr
from fattr.perturbation.engine import random_permutations
from fattr.perturbation.feature_permutation import batch_permutations
from fattr.perturbation.kernel_shap import shapley_kernel_coalitions
from fattr.perturbation.lime import bernoulli_coalitions
from tests.conftest import mlp
from tests.perturbation.models import FIVE, image_case, rel_err, seeded, toy_net


@pytest.mark.parametrize("window, stride", [
    ((1, 3, 3), None),  # captum's default stride 1
    ((1, 3, 3), (1, 2, 2)),  # 8 - 3 = 5 is not a multiple of 2: the last window is cut
    ((1, 5, 3), (1, 2, 3)),  # different windows and strides per axis, neither tiles
    ((1, 2, 3), (1, 2, 1)),
    ((1, 8, 8), 1),  # the whole image at once
    ((1, 1, 1), 1),  # one element at a time == feature ablation
])
def test_occlusion_image(window, stride):
    net, x, target, baseline = image_case()
    f, params = fattr.functional(net)
    ours = fattr.occlusion(f, window, stride, batch_size=13)(params, x, target, baseline=baseline)
    theirs = ca.Occlusion(net).attribute(x, sliding_window_shapes=window, target=target,
                                         strides=1 if stride is None else stride,
                                         baselines=baseline)
    assert ours.dtype == torch.float64
    assert rel_err(ours, theirs.double()) <= 1e-6  # captum divides in float32


@pytest.mark.parametrize("window, stride", [((2,), 2), ((3,), (2,)), ((5,), 1), (2, 1)])
def test_occlusion_vectors(window, stride):
    net = mlp()
    f, params = fattr.functional(net)
    x = torch.randn(4, 5, dtype=torch.float64)
    ours = fattr.occlusion(f, window, stride)(params, x, 1, baseline=0.5)
    captum_window = window if isinstance(window, tuple) else (window,)
    theirs = ca.Occlusion(net).attribute(x, sliding_window_shapes=captum_window, strides=stride,
                                         target=1, baselines=0.5)
    assert rel_err(ours, theirs.double()) <= 1e-6


@pytest.mark.parametrize("mask", ["none", "shared", "shared_2d", "per_example"])
def test_feature_ablation(mask):
    net, x, target, baseline = image_case()
    f, params = fattr.functional(net)
    masks = {"none": None, "shared": FIVE[None, None], "shared_2d": FIVE * 3 + 1,
             "per_example": torch.randint(0, 6, (3, 1, 8, 8), generator=seeded(1))}
    ours = fattr.feature_ablation(f, batch_size=7)(params, x, target, baseline=baseline,
                                                   feature_mask=masks[mask])
    theirs = ca.FeatureAblation(net).attribute(x, target=target, baselines=baseline,
                                               feature_mask=masks[mask])
    assert rel_err(ours, theirs) <= 1e-12


def test_feature_ablation_scalar_baseline_vector_input():
    net = mlp()
    f, params = fattr.functional(net)
    x = torch.randn(5, 5, dtype=torch.float64)
    mask = torch.tensor([[0, 0, 1, 2, 2]])
    ours = fattr.feature_ablation(f)(params, x, 2, baseline=-0.3, feature_mask=mask)
    theirs = ca.FeatureAblation(net).attribute(x, target=2, baselines=-0.3, feature_mask=mask)
    assert rel_err(ours, theirs) <= 1e-12


@pytest.mark.parametrize("mask", [None, FIVE[None, None]])
def test_feature_permutation_same_permutations(mask):
    """captum gets fattr's permutations through perm_func: the feature being permuted is read
    off the mask captum passes (the elements of that feature), then its permutation applied."""
    net, _, _, _ = image_case()
    f, params = fattr.functional(net)
    x = torch.randn(6, 1, 8, 8, dtype=torch.float64, generator=seeded(3))
    target = torch.tensor([0, 1, 2, 3, 0, 1])
    ours = fattr.feature_permutation(f, batch_size=11)(params, x, target, feature_mask=mask,
                                                       generator=seeded(2))
    ids = (torch.arange(64) if mask is None else mask).reshape(1, 1, 8, 8)
    count = int(ids.max()) + 1
    permutations = batch_permutations(count, 6, seeded(2), x.device)
    used = []

    def perm_func(batch: torch.Tensor, feature: torch.Tensor) -> torch.Tensor:
        which = int(ids.expand_as(feature)[feature][0])
        used.append(which)
        return torch.where(feature, batch[permutations[which]], batch)

    theirs = ca.FeaturePermutation(net, perm_func=perm_func).attribute(
        x, target=target, feature_mask=mask)
    assert sorted(used) == list(range(count))
    assert rel_err(ours, theirs) <= 1e-12
    assert ours.abs().sum() > 0


def test_shapley_values_exact():
    """4 features (captum walks all 4! orderings); 5 are checked in test_definitions.py."""
    net, x, target, baseline = image_case()
    f, params = fattr.functional(net)
    four = torch.where(FIVE == 4, 3, FIVE)
    ours = fattr.shapley_values(f, batch_size=17)(params, x, target, baseline=baseline,
                                                  feature_mask=four)
    theirs = ca.ShapleyValues(net).attribute(x, target=target, baselines=baseline,
                                             feature_mask=four[None, None])
    assert rel_err(ours, theirs.double()) <= 1e-6  # captum accumulates in float32


def test_shapley_value_sampling_same_orderings():
    net, x, target, baseline = image_case()
    f, params = fattr.functional(net)
    samples = 6
    ours = fattr.shapley_value_sampling(f, samples=samples, batch_size=9)(
        params, x, target, baseline=baseline, feature_mask=FIVE, generator=seeded(4))
    sampler = ca.ShapleyValueSampling(net)
    orders = random_permutations(samples, 5, seeded(4), x.device).tolist()
    sampler.permutation_generator = lambda features, n: iter(orders)
    theirs = sampler.attribute(x, target=target, baselines=baseline,
                               feature_mask=FIVE[None, None], n_samples=samples)
    assert rel_err(ours, theirs.double()) <= 1e-6


def test_kernel_shap_same_coalitions():
    """captum's KernelShap enforces the endpoints with weight 1e6 in float32; fattr exactly."""
    net, x, target, baseline = image_case()
    f, params = fattr.functional(net)
    samples = 40
    ours = fattr.kernel_shap(f, samples=samples)(params, x, target, baseline=baseline,
                                                 feature_mask=FIVE, generator=seeded(5))
    drawn = shapley_kernel_coalitions(samples, 5, seeded(5), x.device).long()

    def coalitions(original, **kwargs):
        yield torch.ones(1, 5, dtype=torch.long)
        yield torch.zeros(1, 5, dtype=torch.long)
        yield from drawn[:, None]

    theirs = []
    for b in range(3):  # captum's Lime family fits one example at a time
        explainer = ca.KernelShap(net)
        explainer.perturb_func = coalitions
        theirs.append(explainer.attribute(x[b:b + 1], target=target[b:b + 1],
                                          baselines=baseline[b:b + 1],
                                          feature_mask=FIVE[None, None], n_samples=samples + 2))
    assert rel_err(ours, torch.cat(theirs).double()) <= 1e-4


def binary_cosine_kernel(original, perturbed, interpretable, **kwargs) -> float:
    """fattr's default LIME kernel written for captum: exp cosine in the binary space."""
    distance = 1 - math.sqrt(interpretable.sum().item() / interpretable.shape[1])
    return math.exp(-distance**2 / 2)


@pytest.mark.parametrize("kernel_space", ["interpretable", "input"])
def test_lime_same_coalitions_ridge(kernel_space):
    """Same coalitions, same kernel (captum's own default for kernel_space="input"), and
    captum's SkLearnRidge(alpha=1) as the surrogate: the same coefficients."""
    net, x, target, baseline = image_case()
    f, params = fattr.functional(net)
    samples = 60
    ours = fattr.lime(f, samples=samples, kernel_space=kernel_space)(
        params, x, target, baseline=baseline, feature_mask=FIVE, generator=seeded(6))
    drawn = bernoulli_coalitions(samples, 5, seeded(6), x.device).long()
    theirs = []
    for b in range(3):
        rows = iter(drawn[:, None])
        explainer = ca.Lime(net, interpretable_model=SkLearnRidge(alpha=1.0),
                            similarity_func=binary_cosine_kernel
                            if kernel_space == "interpretable" else None,
                            perturb_func=lambda original, rows=rows, **kwargs: next(rows))
        theirs.append(explainer.attribute(x[b:b + 1], target=target[b:b + 1],
                                          baselines=baseline[b:b + 1],
                                          feature_mask=FIVE[None, None], n_samples=samples))
    assert rel_err(ours, torch.cat(theirs).double()) <= 1e-5  # captum fits in float32


def test_captum_reference_values():
    """REFERENCES.md "Perturbation": captum's own test values on its toy network."""
    f, params = fattr.functional(toy_net())
    x = torch.tensor([[20.0, 50.0, 30.0]], dtype=torch.float64)
    ablation = fattr.feature_ablation(f)(params, x, 0)
    torch.testing.assert_close(ablation, torch.tensor([[80.0, 200.0, 120.0]],
                                                      dtype=torch.float64), rtol=0, atol=1e-12)
    exact = fattr.shapley_values(f)(params, x, 0)
    expected = torch.tensor([[76.0 + 2 / 3, 196.0 + 2 / 3, 116.0 + 2 / 3]], dtype=torch.float64)
    torch.testing.assert_close(exact, expected, rtol=0, atol=1e-11)
    occlusion = fattr.occlusion(f, (1,))(params, x, 0)
    torch.testing.assert_close(occlusion, ablation, rtol=0, atol=1e-12)
