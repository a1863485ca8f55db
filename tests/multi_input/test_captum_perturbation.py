"""Tuple inputs, masks across inputs, extra forward arguments and whole-batch outputs through
the perturbation methods: parity with captum 0.9 (float64)."""

from __future__ import annotations

import captum.attr as ca
import pytest
import torch
from captum._utils.models.linear_model import SkLearnRidge

import fattr
from fattr.perturbation.engine import random_permutations
from fattr.perturbation.feature_permutation import batch_permutations
from fattr.perturbation.kernel_shap import shapley_kernel_coalitions
from fattr.perturbation.lime import bernoulli_coalitions
from tests.multi_input.models import close, multi_input, relu_linear, seeded, three_inputs

TARGET = torch.tensor([0, 1, 1, 0])
# ids shared across the three inputs form one feature: 5 features in all
MASKS = (torch.tensor([[0, 1, 2]]), torch.tensor([[2, 3, 3]]), torch.tensor([[4, 4, 0]]))


def case():
    net = multi_input()
    f, params = fattr.functional(net)
    return net, f, params, three_inputs(seed=11)


@pytest.mark.parametrize("batch_size", [None, 5])
def test_feature_ablation_masks_across_inputs(batch_size):
    net, f, params, xs = case()
    baselines = (0.5, -1.0, torch.zeros(1, 3, dtype=torch.float64))
    ours = fattr.feature_ablation(f, batch_size=batch_size)(
        params, xs, TARGET, baseline=baselines, feature_mask=MASKS, model_args=(2,))
    theirs = ca.FeatureAblation(net).attribute(xs, baselines=baselines, target=TARGET,
                                               feature_mask=MASKS, additional_forward_args=(2,))
    close(ours, theirs, 1e-12)
    unmasked = fattr.feature_ablation(f)(params, xs, TARGET, model_args=(2,))
    close(unmasked, ca.FeatureAblation(net).attribute(xs, target=TARGET,
                                                      additional_forward_args=(2,)), 1e-12)


def test_occlusion_one_window_per_input():
    net, f, params, xs = case()
    windows, strides = ((2,), (1,), (3,)), ((1,), (1,), (1,))
    ours = fattr.occlusion(f, windows, strides, batch_size=6)(params, xs, TARGET,
                                                             baseline=(0.0, 1.0, -1.0),
                                                             model_args=(3,))
    theirs = ca.Occlusion(net).attribute(xs, sliding_window_shapes=windows, strides=strides,
                                         baselines=(0.0, 1.0, -1.0), target=TARGET,
                                         additional_forward_args=(3,))
    close(ours, theirs, 1e-6)  # captum divides in float32


def test_shapley_values_exact_and_sampled():
    net, f, params, xs = case()
    ours = fattr.shapley_values(f, batch_size=9)(params, xs, TARGET, feature_mask=MASKS,
                                                model_args=(2,))
    theirs = ca.ShapleyValues(net).attribute(xs, target=TARGET, feature_mask=MASKS,
                                             additional_forward_args=(2,))
    close(ours, theirs, 1e-6)  # captum accumulates in float32
    samples = 6
    sampled = fattr.shapley_value_sampling(f, samples=samples)(
        params, xs, TARGET, feature_mask=MASKS, generator=seeded(4), model_args=(2,))
    sampler = ca.ShapleyValueSampling(net)
    orders = random_permutations(samples, 5, seeded(4), xs[0].device).tolist()
    sampler.permutation_generator = lambda features, n: iter(orders)
    theirs = sampler.attribute(xs, target=TARGET, feature_mask=MASKS, n_samples=samples,
                               additional_forward_args=(2,))
    close(sampled, theirs, 1e-6)


def test_kernel_shap_and_lime_same_coalitions():
    net, f, params, xs = case()
    samples = 30
    ours = fattr.kernel_shap(f, samples=samples)(params, xs, TARGET, feature_mask=MASKS,
                                                 generator=seeded(5), model_args=(2,))
    drawn = shapley_kernel_coalitions(samples, 5, seeded(5), xs[0].device).long()

    def coalitions(original, **kwargs):
        yield torch.ones(1, 5, dtype=torch.long)
        yield torch.zeros(1, 5, dtype=torch.long)
        yield from drawn[:, None]

    kernel, lime = [], []
    rows = bernoulli_coalitions(40, 5, seeded(6), xs[0].device).long()
    for b in range(4):  # captum's Lime family fits one example at a time
        one = tuple(x[b:b + 1] for x in xs)
        explainer = ca.KernelShap(net)
        explainer.perturb_func = coalitions
        kernel.append(explainer.attribute(one, target=TARGET[b:b + 1], feature_mask=MASKS,
                                          n_samples=samples + 2, additional_forward_args=(2,)))
        it = iter(rows[:, None])
        surrogate = ca.Lime(net, interpretable_model=SkLearnRidge(alpha=1.0),
                            perturb_func=lambda original, it=it, **kwargs: next(it))
        lime.append(surrogate.attribute(one, target=TARGET[b:b + 1], feature_mask=MASKS,
                                        n_samples=40, additional_forward_args=(2,)))
    close(ours, tuple(torch.cat(c) for c in zip(*kernel)), 1e-4)
    ours_lime = fattr.lime(f, samples=40, kernel_space="input")(
        params, xs, TARGET, feature_mask=MASKS, generator=seeded(6), model_args=(2,))
    close(ours_lime, tuple(torch.cat(c) for c in zip(*lime)), 1e-5)


def test_feature_permutation_same_permutations_tuple_inputs():
    """captum calls perm_func once per input and feature; the feature is read off the mask of
    that input (ids shared across inputs are one feature: one permutation for all of it)."""
    net, f, params, xs = case()
    ours = fattr.feature_permutation(f)(params, xs, TARGET, feature_mask=MASKS,
                                        generator=seeded(8), model_args=(2,))
    permutations = batch_permutations(5, 4, seeded(8), xs[0].device)

    def perm_func(batch: torch.Tensor, feature: torch.Tensor) -> torch.Tensor:
        which = next(i for i, x in enumerate(xs) if torch.equal(x, batch))
        feature_id = int(MASKS[which].expand_as(feature)[feature][0])
        return torch.where(feature, batch[permutations[feature_id]], batch)

    theirs = ca.FeaturePermutation(net, perm_func=perm_func).attribute(
        xs, target=TARGET, feature_mask=MASKS, additional_forward_args=(2,))
    close(ours, theirs, 1e-12)


def loss_model(net: torch.nn.Module, y: torch.Tensor):
    """A forward function that returns ONE value for the whole batch: the mean squared error."""
    def loss(params, x, *args):
        out = torch.func.functional_call(net, params, (x,))
        return ((out.squeeze(1) - y) ** 2).mean()
    return loss


def test_whole_batch_loss_is_one_game_as_in_captum():
    torch.manual_seed(0)
    lin = torch.nn.Linear(3, 1).double().eval()
    y = torch.randn(6, dtype=torch.float64)
    x = torch.randn(6, 3, dtype=torch.float64)
    params = dict(lin.named_parameters())
    f = loss_model(lin, y)
    mse = lambda v: ((lin(v).squeeze(1) - y) ** 2).mean()
    ours = fattr.feature_ablation(f)(params, x)
    torch.testing.assert_close(ours, ca.FeatureAblation(mse).attribute(x), rtol=1e-12, atol=0)
    assert ours.shape == (1, 3)
    order = batch_permutations(3, 6, seeded(2), x.device)
    ours_perm = fattr.feature_permutation(f)(params, x, generator=seeded(2))
    # the same permutations by hand: column j shuffled across the batch
    for j in range(3):
        moved = x.clone()
        moved[:, j] = x[order[j], j]
        torch.testing.assert_close(ours_perm[0, j], mse(x) - mse(moved))
    occl = fattr.occlusion(f, (1,))(params, x)
    theirs = ca.Occlusion(mse).attribute(x, sliding_window_shapes=(1,)).double()
    torch.testing.assert_close(occl, theirs, rtol=1e-6, atol=1e-9)
    with pytest.raises(fattr.FattrError, match="one value for the whole batch.*shared"):
        fattr.feature_ablation(f)(params, x, feature_mask=torch.arange(18).reshape(6, 3))


def test_deeplift_tuple_parity_through_relu_linear_with_int_argument():
    net = relu_linear()
    f, params = fattr.functional(net)
    xs = tuple(torch.randn(3, 3, dtype=torch.float64, generator=seeded(i)) for i in (1, 2))
    ours = fattr.feature_ablation(f)(params, xs, None, model_args=(2,))
    close(ours, ca.FeatureAblation(net).attribute(xs, additional_forward_args=(2,)), 1e-12)
