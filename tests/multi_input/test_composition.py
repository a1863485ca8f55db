"""Tuple inputs and extra arguments compose: vmap over targets, per-example functions under
vmap, gradients with respect to the params, batch_size invariance; and bad input is refused
with a sentence."""

from __future__ import annotations

import pytest
import torch
from torch.func import vmap

import fattr
from tests.conftest import directional_derivative
from tests.multi_input.models import multi_input, multi_layer, seeded, three_inputs

TARGETS = torch.tensor([[0, 1, 1, 0], [1, 1, 0, 0], [0, 0, 0, 1]])

GRADIENT_METHODS = {
    "saliency": lambda f: fattr.saliency(f, abs=False),
    "input_x_gradient": fattr.input_x_gradient,
    "integrated_gradients": lambda f: fattr.integrated_gradients(f, steps=5, batch_size=7),
    "deeplift": fattr.deeplift,
    "lrp": lambda f: fattr.lrp(f, "epsilon"),
    "guided_backprop": fattr.guided_backprop,
}


@pytest.mark.parametrize("name", sorted(GRADIENT_METHODS))
def test_vmap_over_targets_with_tuple_inputs_and_model_args(name):
    f, params = fattr.functional(multi_input())
    xs = three_inputs(seed=31)
    attr = GRADIENT_METHODS[name](f)
    mapped = vmap(lambda t: attr(params, xs, t, model_args=(2,)))(TARGETS)
    for k in range(len(TARGETS)):
        one = attr(params, xs, TARGETS[k], model_args=(2,))
        for a, b in zip(mapped, one):
            torch.testing.assert_close(a[k], b)


@pytest.mark.parametrize("name", ["saliency", "integrated_gradients", "deeplift"])
def test_per_example_tuple_inputs_under_vmap_equal_the_batched_call(name):
    net = multi_layer()
    f, params = fattr.functional(net)
    x, add = three_inputs(seed=32)[:2]
    batched = GRADIENT_METHODS[name](f)(params, x, TARGETS[0], model_kwargs={"add_input": add})
    single = GRADIENT_METHODS[name](fattr.per_example(f))
    mapped = vmap(lambda xi, ai, ti: single(params, xi, ti, model_kwargs={"add_input": ai}))(
        x, add, TARGETS[0])
    torch.testing.assert_close(mapped, batched)


def test_gradient_with_respect_to_params_through_tuple_inputs():
    net = multi_input()
    f, params = fattr.functional(net)
    weights = fattr.trainable(f, params)
    xs = three_inputs(seed=33)
    ig = fattr.integrated_gradients(f, steps=4)

    def loss(w):
        return sum(a.square().sum() for a in ig({**params, **w}, xs, TARGETS[0], model_args=(2,)))

    torch.manual_seed(3)
    check = directional_derivative(loss, weights)
    torch.testing.assert_close(check.analytic, check.numeric, rtol=1e-5, atol=1e-8)
    assert check.analytic.abs() > 0


@pytest.mark.parametrize("method", ["feature_ablation", "shapley_value_sampling", "lime",
                                    "kernel_shap", "feature_permutation"])
def test_perturbation_batch_size_changes_nothing_with_extra_arguments(method):
    net = multi_layer()
    f, params = fattr.functional(net)
    x, add = three_inputs(seed=34)[:2]
    build = getattr(fattr, method)
    draws = {} if method == "feature_ablation" else {"generator": seeded(2)}
    results = [build(f, batch_size=batch_size)(params, x, TARGETS[0], model_kwargs={
        "add_input": add}, **({k: seeded(2) for k in draws})) for batch_size in (None, 1, 5)]
    for r in results[1:]:
        torch.testing.assert_close(r, results[0])
    if method == "feature_ablation":  # deterministic: each example as if alone
        alone = build(f)(params, x[1:2], TARGETS[0][1:2], model_kwargs={"add_input": add[1:2]})
        torch.testing.assert_close(results[0][1:2], alone)


def test_bad_tuple_input_gets_a_sentence():
    f, params = fattr.functional(multi_input())
    xs = three_inputs()
    ig = fattr.integrated_gradients(f, steps=2)
    with pytest.raises(fattr.FattrError, match="batch sizes \\[4, 4, 3\\]"):
        ig(params, (xs[0], xs[1], xs[2][:3]), 0, model_args=(1,))
    with pytest.raises(fattr.FattrError, match="baseline must be a tuple with one baseline per "
                                               "input"):
        ig(params, xs, 0, baseline=torch.zeros(4, 3), model_args=(1,))
    with pytest.raises(fattr.FattrError, match="baseline must be one value for every input or a "
                                               "tuple with one entry per input \\(3\\), got a "
                                               "tuple of 2"):
        ig(params, xs, 0, baseline=(0.0, 1.0), model_args=(1,))
    with pytest.raises(fattr.FattrTypeError, match="x\\[1\\] must be a torch.Tensor, got int"):
        ig(params, (xs[0], 3), 0)
    with pytest.raises(fattr.FattrTypeError, match="model_args must be a tuple.*model_args="
                                                   "\\(value,\\)"):
        ig(params, xs, 0, model_args=2)
    with pytest.raises(fattr.FattrTypeError, match="unexpected argument baselines= \\(captum's "
                                                   "baselines= is fattr's baseline\\)"):
        ig(params, xs, 0, baselines=(0.0, 0.0, 0.0))
    with pytest.raises(fattr.FattrError, match="feature_mask must be a tuple with one mask per "
                                               "input"):
        fattr.feature_ablation(f)(params, xs, 0, feature_mask=torch.zeros(1, 3, dtype=torch.long),
                                  model_args=(1,))
    with pytest.raises(fattr.FattrError, match="takes one input tensor, got a tuple of 3"):
        fattr.fullgrad(f)(params, xs, 0, model_args=(1,))
    assert fattr.saliency(f)(params, tuple(x[:0] for x in xs), 0, model_args=(1,))[2].shape \
        == (0, 3)
