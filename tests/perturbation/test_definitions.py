"""Definitions re-derived independently in float64, Shapley axioms, and known answers."""

from __future__ import annotations

import itertools
import math

import pytest
import torch
from sklearn.linear_model import LinearRegression, Ridge
from torch import nn

import fattr
from fattr.perturbation.lime import bernoulli_coalitions
from tests.conftest import mlp
from tests.perturbation.models import FIVE, image_case, seeded, toy_net


def score(net: nn.Module, x: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return net(x).gather(1, target[:, None])[:, 0]


def game(net, x, baseline, target, mask):
    """v(S) per example for a coalition S of feature ids (ids of a shared mask)."""
    return lambda kept: score(net, torch.where(torch.isin(mask, torch.tensor(list(kept))),
                                               x, baseline), target)


def test_occlusion_matches_a_loop_over_windows():
    """Brute force: every window position in a Python loop, drops summed and counted."""
    net, x, target, baseline = image_case()
    f, params = fattr.functional(net)
    window, stride = (1, 3, 4), (1, 2, 3)
    total, count = torch.zeros_like(x), torch.zeros_like(x)
    full = score(net, x, target)
    for i in range(0, 8 - 3 + 2, 2):  # positions 0, 2, 4, 6 (the last one cut at the border)
        for j in range(0, 8 - 4 + 3, 3):  # 0, 3, 6 (cut)
            box = torch.zeros_like(x, dtype=torch.bool)
            box[:, :, i:i + 3, j:j + 4] = True
            drop = full - score(net, torch.where(box, baseline, x), target)
            total += drop[:, None, None, None] * box
            count += box
    ours = fattr.occlusion(f, window, stride)(params, x, target, baseline=baseline)
    torch.testing.assert_close(ours, total / count, rtol=1e-12, atol=1e-12)


def test_occlusion_window_over_everything_is_the_total_drop():
    net, x, target, baseline = image_case()
    f, params = fattr.functional(net)
    ours = fattr.occlusion(f, (1, 8, 8))(params, x, target, baseline=baseline)
    drop = score(net, x, target) - score(net, baseline, target)
    torch.testing.assert_close(ours, drop[:, None, None, None].expand_as(x), rtol=1e-12,
                               atol=1e-12)


def test_shapley_values_match_all_orderings_in_float64():
    """The textbook definition: the mean marginal contribution over all F! orderings."""
    net, x, target, baseline = image_case()
    f, params = fattr.functional(net)
    v = game(net, x, baseline, target, FIVE)
    phi = torch.zeros(3, 5, dtype=torch.float64)
    orderings = list(itertools.permutations(range(5)))
    for order in orderings:
        for k, feature in enumerate(order):
            phi[:, feature] += v(order[:k + 1]) - v(order[:k])
    phi /= len(orderings)
    ours = fattr.shapley_values(f)(params, x, target, baseline=baseline, feature_mask=FIVE)
    torch.testing.assert_close(ours, phi[:, FIVE.flatten()].reshape(x.shape), rtol=1e-12,
                               atol=1e-13)


@pytest.mark.parametrize("method", ["shapley_values", "shapley_value_sampling", "kernel_shap"])
def test_efficiency(method):
    """sum of the feature values = f(x) - f(baseline): exact for the exact method, and by
    construction for sampling (telescoping orderings) and KernelSHAP (constrained fit)."""
    net = mlp()
    f, params = fattr.functional(net)
    x = torch.randn(4, 5, dtype=torch.float64)
    baseline = torch.randn(4, 5, dtype=torch.float64)
    target = torch.tensor([0, 1, 2, 1])
    attr = {"shapley_values": fattr.shapley_values(f),
            "shapley_value_sampling": fattr.shapley_value_sampling(f, samples=3),
            "kernel_shap": fattr.kernel_shap(f, samples=7)}[method]
    extra = {} if method == "shapley_values" else {"generator": seeded(1)}
    a = attr(params, x, target, baseline=baseline, **extra)
    gap = a.sum(1) - (score(net, x, target) - score(net, baseline, target))
    assert gap.abs().max() <= 1e-12


def test_efficiency_with_groups_counts_each_group_once():
    net, x, target, baseline = image_case()
    f, params = fattr.functional(net)
    a = fattr.shapley_values(f)(params, x, target, baseline=baseline, feature_mask=FIVE)
    first = torch.stack([(FIVE == i).nonzero()[0] for i in range(5)])  # one element per group
    per_group = a[:, 0, first[:, 0], first[:, 1]]
    gap = per_group.sum(1) - (score(net, x, target) - score(net, baseline, target))
    assert gap.abs().max() <= 1e-12


class Linear(nn.Module):
    def __init__(self, w: torch.Tensor, c: float):
        super().__init__()
        self.w, self.c = nn.Parameter(w), c

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x * self.w).flatten(1).sum(1, keepdim=True) + self.c


@pytest.mark.parametrize("method", ["feature_ablation", "shapley_values", "kernel_shap",
                                    "lime", "shapley_value_sampling", "occlusion"])
def test_linear_model_gets_w_times_x_minus_baseline(method):
    """For f(x) = w.x + c every method recovers w * (x - b) (LIME with alpha=0, KernelSHAP
    from enough samples: the regression fits exactly)."""
    w = torch.randn(1, 6, dtype=torch.float64)
    net = Linear(w, 0.7).eval()
    f, params = fattr.functional(net)
    x = torch.randn(3, 6, dtype=torch.float64)
    baseline = torch.randn(3, 6, dtype=torch.float64)
    attr = {"feature_ablation": fattr.feature_ablation(f),
            "shapley_values": fattr.shapley_values(f),
            "kernel_shap": fattr.kernel_shap(f, samples=40),
            "lime": fattr.lime(f, samples=40, alpha=0.0),
            "shapley_value_sampling": fattr.shapley_value_sampling(f, samples=2),
            "occlusion": fattr.occlusion(f, (1,))}[method]
    extra = {"generator": seeded(2)} if method in ("kernel_shap", "lime",
                                                   "shapley_value_sampling") else {}
    a = attr(params, x, 0, baseline=baseline, **extra)
    torch.testing.assert_close(a, w * (x - baseline), rtol=1e-10, atol=1e-10)


def test_symmetry_and_dummy():
    """Two interchangeable features get equal values; a feature the model ignores gets 0."""
    net = nn.Sequential(nn.Linear(4, 1)).double().eval()
    with torch.no_grad():
        net[0].weight.copy_(torch.tensor([[1.0, 1.0, 0.0, 2.0]]))
    model = lambda p, x: torch.tanh(nn.functional.linear(x, p["0.weight"], p["0.bias"])) * x[:, 3:]
    params = {k: v.detach() for k, v in net.named_parameters()}
    x = torch.tensor([[0.3, 0.3, 5.0, 1.2]], dtype=torch.float64)
    for attr in (fattr.shapley_values(model), fattr.feature_ablation(model)):
        a = attr(params, x, None)
        assert abs(a[0, 2]) <= 1e-15 and a.abs().min() < a.abs().max()
        torch.testing.assert_close(a[0, 0], a[0, 1], rtol=1e-14, atol=1e-15)


def test_sampling_and_kernel_shap_converge_to_exact_shapley():
    """Statistical: with many samples both estimators approach the exact values; with few
    they do not. Fixed seeds make this deterministic; the measured errors (relative to the
    largest value) are 0.038 (400 orderings), 0.018 (3000 coalitions) and 0.33 (12)."""
    net, x, target, baseline = image_case()
    f, params = fattr.functional(net)
    call = dict(baseline=baseline, feature_mask=FIVE)
    exact = fattr.shapley_values(f)(params, x, target, **call)
    error = lambda a: ((a - exact).abs().max() / exact.abs().max()).item()
    sampled = fattr.shapley_value_sampling(f, samples=400)(params, x, target, **call,
                                                           generator=seeded(3))
    kernel = fattr.kernel_shap(f, samples=3000)(params, x, target, **call, generator=seeded(3))
    few = fattr.kernel_shap(f, samples=12)(params, x, target, **call, generator=seeded(3))
    assert error(sampled) < 0.1
    assert error(kernel) < 0.05
    assert error(few) > 0.15


def test_lime_is_sklearn_weighted_ridge_in_float64():
    """Same coalitions and kernel, sklearn's Ridge(alpha, sample_weight=...) in float64."""
    net, x, target, baseline = image_case()
    f, params = fattr.functional(net)
    samples, alpha = 30, 0.3
    ours = fattr.lime(f, samples=samples, alpha=alpha, kernel_width=0.8)(
        params, x, target, baseline=baseline, feature_mask=FIVE, generator=seeded(8))
    z = bernoulli_coalitions(samples, 5, seeded(8), x.device)
    v = game(net, x, baseline, target, FIVE)
    scores = torch.stack([v(torch.nonzero(row)[:, 0].tolist()) for row in z])  # (S, B)
    distance = 1 - (z.sum(1).double() / 5).sqrt()
    weights = torch.exp(-distance**2 / (2 * 0.8**2))
    for b in range(3):
        ridge = Ridge(alpha=alpha).fit(z.double().numpy(), scores[:, b].numpy(),
                                       sample_weight=weights.numpy())
        expected = torch.tensor(ridge.coef_)[FIVE.flatten()].reshape(1, 8, 8)
        torch.testing.assert_close(ours[b], expected, rtol=1e-9, atol=1e-10)


def test_lime_input_space_kernel_is_cosine_of_inputs():
    """kernel_space="input" weighs by the cosine between x and the perturbed input (captum)."""
    from fattr.perturbation.features import feature_groups
    from fattr.perturbation.lime import cosine_distance

    _, x, _, baseline = image_case()
    keep = bernoulli_coalitions(9, 5, seeded(9), x.device)
    features = feature_groups(FIVE, (x,), "lime")
    ours = cosine_distance(keep, x.flatten(1), baseline.flatten(1), features, "input")  # (S, B)
    for s in range(9):
        removed = features.removed(keep[s].expand(3, -1), torch.arange(3)).reshape(x.shape)
        perturbed = torch.where(removed, baseline, x)
        cos = torch.nn.functional.cosine_similarity(x.flatten(1), perturbed.flatten(1))
        torch.testing.assert_close(ours[s], 1 - cos, rtol=1e-12, atol=1e-12)


def test_feature_ablation_per_example_masks_are_independent():
    net, x, target, baseline = image_case()
    f, params = fattr.functional(net)
    masks = torch.randint(0, 4, (3, 1, 8, 8), generator=seeded(4))
    attr = fattr.feature_ablation(f)
    together = attr(params, x, target, baseline=baseline, feature_mask=masks)
    for b in range(3):
        alone = attr(params, x[b:b + 1], target[b:b + 1], baseline=baseline[b:b + 1],
                     feature_mask=masks[b:b + 1])
        torch.testing.assert_close(together[b:b + 1], alone, rtol=1e-13, atol=1e-13)


def test_feature_ids_need_not_be_contiguous():
    net, x, target, baseline = image_case()
    f, params = fattr.functional(net)
    attr = fattr.shapley_values(f)
    dense = attr(params, x, target, baseline=baseline, feature_mask=FIVE)
    sparse = attr(params, x, target, baseline=baseline, feature_mask=FIVE * 7 - 3)
    torch.testing.assert_close(sparse, dense, rtol=0, atol=0)


def test_feature_permutation_definition():
    """Each feature's drop when it alone takes the values of the permuted examples."""
    from fattr.perturbation.feature_permutation import batch_permutations

    net = mlp()
    f, params = fattr.functional(net)
    x = torch.randn(5, 5, dtype=torch.float64)
    mask = torch.tensor([0, 1, 1, 2, 0])
    target = torch.tensor([0, 1, 2, 0, 1])
    ours = fattr.feature_permutation(f)(params, x, target, feature_mask=mask,
                                        generator=seeded(5))
    permutations = batch_permutations(3, 5, seeded(5), x.device)
    assert not (permutations == torch.arange(5)).all(1).any()
    for feature in range(3):
        moved = torch.where(mask == feature, x[permutations[feature]], x)
        drop = score(net, x, target) - score(net, moved, target)
        torch.testing.assert_close(ours[:, mask == feature],
                                   drop[:, None].expand(-1, int((mask == feature).sum())),
                                   rtol=1e-13, atol=1e-13)


def test_batch_permutations_are_never_the_identity():
    from fattr.perturbation.feature_permutation import batch_permutations

    two = batch_permutations(50, 2, seeded(0), torch.device("cpu"))
    assert (two == torch.tensor([1, 0])).all()
    many = batch_permutations(200, 3, seeded(0), torch.device("cpu"))
    assert not (many == torch.arange(3)).all(1).any()
    assert (many.sort(1).values == torch.arange(3)).all()


def test_shapley_kernel_sampling_distribution():
    """Sizes follow p(k) ~ (F-1)/(k(F-k)); the full and empty coalitions are never drawn."""
    from fattr.perturbation.kernel_shap import shapley_kernel_coalitions

    z = shapley_kernel_coalitions(40000, 6, seeded(0), torch.device("cpu"))
    sizes = torch.bincount(z.sum(1), minlength=7).double() / 40000
    k = torch.arange(1, 6, dtype=torch.float64)
    expected = (1 / (k * (6 - k))) / (1 / (k * (6 - k))).sum()
    assert sizes[0] == 0 and sizes[6] == 0
    torch.testing.assert_close(sizes[1:6], expected, rtol=0, atol=0.01)
    assert math.isclose(z[z.sum(1) == 3].double().mean().item(), 0.5, abs_tol=0.02)


def test_toy_net_occlusion_windows():
    """On captum's toy net, a width-2 window: element 1 is covered twice, the ends once."""
    f, params = fattr.functional(toy_net())
    net = toy_net()
    x = torch.tensor([[20.0, 50.0, 30.0]], dtype=torch.float64)
    t = torch.tensor([0])
    full = score(net, x, t)
    first = full - score(net, torch.tensor([[0.0, 0.0, 30.0]], dtype=torch.float64), t)
    second = full - score(net, torch.tensor([[20.0, 0.0, 0.0]], dtype=torch.float64), t)
    expected = torch.cat([first, (first + second) / 2, second])[None]
    torch.testing.assert_close(fattr.occlusion(f, 2)(params, x, 0), expected, rtol=0,
                               atol=1e-12)


def test_fewer_samples_than_features_gives_minimum_norm_solutions():
    """64 features, 10 samples: the regressions are underdetermined; KernelSHAP still meets
    efficiency exactly, LIME without ridge returns the minimum-norm fit (finite)."""
    net, x, target, baseline = image_case()
    f, params = fattr.functional(net)
    ks = fattr.kernel_shap(f, samples=10)(params, x, target, baseline=baseline,
                                          generator=seeded(1))
    gap = ks.flatten(1).sum(1) - (score(net, x, target) - score(net, baseline, target))
    assert gap.abs().max() <= 1e-12
    lime = fattr.lime(f, samples=10, alpha=0.0)(params, x, target, baseline=baseline,
                                                generator=seeded(1))
    assert torch.isfinite(lime).all() and lime.abs().sum() > 0
    ridge = fattr.lime(f, samples=10, alpha=1e-9)(params, x, target, baseline=baseline,
                                                  generator=seeded(1))
    torch.testing.assert_close(lime, ridge, rtol=1e-5, atol=1e-7)  # ridge -> 0 is min-norm
    z = bernoulli_coalitions(10, 64, seeded(1), x.device)
    v = torch.stack([score(net, torch.where(row.reshape(1, 1, 8, 8), x, baseline), target)
                     for row in z])
    distance = 1 - (z.sum(1).double() / 64).sqrt()
    weights = torch.exp(-distance**2 / 2)
    for b in range(3):  # sklearn's LinearRegression: minimum-norm coefficients
        fit = LinearRegression().fit(z.double().numpy(), v[:, b].numpy(),
                                     sample_weight=weights.numpy())
        torch.testing.assert_close(lime[b].flatten(), torch.tensor(fit.coef_), rtol=1e-8,
                                   atol=1e-10)
