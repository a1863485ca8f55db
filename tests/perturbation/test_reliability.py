"""Bad input gets a clear error naming the argument; the user's model is never modified."""

from __future__ import annotations

import pytest
import torch

import fattr
from tests.conftest import assert_unchanged, mlp, state_snapshot
from tests.perturbation.models import FIVE, image_case, seeded

MASKED = {
    "feature_ablation": lambda f: fattr.feature_ablation(f),
    "feature_permutation": lambda f: fattr.feature_permutation(f),
    "shapley_values": lambda f: fattr.shapley_values(f),
    "shapley_value_sampling": lambda f: fattr.shapley_value_sampling(f, samples=2),
    "kernel_shap": lambda f: fattr.kernel_shap(f, samples=4),
    "lime": lambda f: fattr.lime(f, samples=4),
}
ALL = {**MASKED, "occlusion": lambda f: fattr.occlusion(f, (1, 2, 2), 2)}


@pytest.fixture
def setup():
    net, x, target, _ = image_case()
    f, params = fattr.functional(net)
    return net, f, params, x, target


@pytest.mark.parametrize("name", MASKED)
@pytest.mark.parametrize("mask, match", [
    (FIVE.double(), "feature_mask must hold integer feature ids, got dtype torch.float64"),
    (FIVE > 2, "integer feature ids, got dtype torch.bool"),
    (FIVE[:4], r"feature_mask of shape \(4, 8\) does not broadcast to x of shape "
               r"\(3, 1, 8, 8\)"),
    (torch.zeros(2, 1, 8, 8, dtype=torch.long), r"shape \(2, 1, 8, 8\) does not broadcast"),
    (torch.zeros(1, 3, 1, 8, 8, dtype=torch.long), "does not broadcast"),
    (FIVE.tolist(), "feature_mask must be an integer tensor .* got list"),
])
def test_bad_feature_masks(setup, name, mask, match):
    _, f, params, x, target = setup
    with pytest.raises(fattr.FattrError, match=f"^{name}: .*{match}"):
        MASKED[name](f)(params, x, target, feature_mask=mask)


def test_too_many_features_for_exact_shapley(setup):
    _, f, params, x, target = setup
    with pytest.raises(fattr.FattrError, match=r"shapley_values: 64 features, but exact Shapley "
                                               r"values are limited to max_features=16 .*2\^64"):
        fattr.shapley_values(f)(params, x, target)
    mask = (torch.arange(64) % 20).reshape(8, 8)
    with pytest.raises(fattr.FattrError, match="20 features.*max_features=16"):
        fattr.shapley_values(f)(params, x, target, feature_mask=mask)
    with pytest.raises(fattr.FattrError, match="5 features.*max_features=4"):
        fattr.shapley_values(f, max_features=4)(params, x, target, feature_mask=FIVE)
    with pytest.raises(fattr.FattrError, match="max_features must be an int >= 1"):
        fattr.shapley_values(f, max_features=0)


@pytest.mark.parametrize("window, stride, match", [
    ((1, 0, 2), None, r"window must be a positive int or a tuple of positive ints .* got "
                      r"\(1, 0, 2\)"),
    ((1, 2.0, 2), None, "window must be a positive int"),
    ((), None, "window must be"),
    ("3", None, "window must be"),
    ((1, 2, 2), (1, 2), "stride .* has 2 entries but the window has 3"),
    ((1, 2, 2), 0, "stride must be a positive int"),
    ((1, 2, 2), (1, -1, 1), "stride must be"),
    ((True, 2, 2), None, "window must be"),
])
def test_bad_window_or_stride_in_constructor(window, stride, match):
    f, _ = fattr.functional(mlp())
    with pytest.raises(fattr.FattrError, match=f"^occlusion: {match}"):
        fattr.occlusion(f, window, stride)


@pytest.mark.parametrize("window, stride, match", [
    ((2, 2), None, r"window \(2, 2\) has 2 axes but x of shape \(3, 1, 8, 8\) has 3 after the "
                   r"batch axis.*e.g. \(1, 8, 8\)"),
    ((1, 9, 2), None, r"window \(1, 9, 2\) is larger than the input \(1, 8, 8\)"),
    ((1, 3, 3), (1, 4, 1), r"stride \(1, 4, 1\) is larger than window \(1, 3, 3\)"),
])
def test_bad_window_for_the_input(setup, window, stride, match):
    _, f, params, x, target = setup
    with pytest.raises(fattr.FattrError, match=f"^occlusion: {match}"):
        fattr.occlusion(f, window, stride)(params, x, target)


def test_stride_may_exceed_a_window_that_spans_the_axis(setup):
    _, f, params, x, target = setup
    a = fattr.occlusion(f, (1, 8, 2), (5, 9, 2))(params, x, target)
    b = fattr.occlusion(f, (1, 8, 2), (1, 1, 2))(params, x, target)
    torch.testing.assert_close(a, b, rtol=0, atol=0)


@pytest.mark.parametrize("name", ["shapley_value_sampling", "kernel_shap", "lime"])
@pytest.mark.parametrize("samples", [0, -3, 2.5, True, None])
def test_bad_samples(name, samples):
    f, _ = fattr.functional(mlp())
    method = getattr(fattr, name)
    with pytest.raises(fattr.FattrError, match=f"^{name}: samples must be an int >= 1"):
        method(f, samples=samples)


@pytest.mark.parametrize("name", ALL)
@pytest.mark.parametrize("batch_size", [0, -1, 1.5, True])
def test_bad_batch_size(name, batch_size):
    f, _ = fattr.functional(mlp())
    method = getattr(fattr, name)
    with pytest.raises(fattr.FattrError, match=f"^{name}: batch_size must be a positive int"):
        if name == "occlusion":
            method(f, (2,), batch_size=batch_size)
        else:
            method(f, batch_size=batch_size)


@pytest.mark.parametrize("options, match", [
    ({"alpha": -1.0}, "alpha .* must be a number >= 0, got -1.0"),
    ({"alpha": "big"}, "alpha"),
    ({"kernel_width": 0.0}, "kernel_width must be a number > 0"),
    ({"kernel_space": "binary"}, "kernel_space must be one of interpretable, input, got "
                                 "'binary'"),
])
def test_bad_lime_options(options, match):
    f, _ = fattr.functional(mlp())
    with pytest.raises(fattr.FattrError, match=f"^lime: {match}"):
        fattr.lime(f, **options)


def test_feature_permutation_needs_two_examples(setup):
    _, f, params, x, target = setup
    with pytest.raises(fattr.FattrError, match="feature_permutation: .* at least 2 examples, "
                                               "got a batch of 1"):
        fattr.feature_permutation(f)(params, x[:1], target[:1])
    with pytest.raises(fattr.FattrError, match="at least 2 examples"):
        fattr.feature_permutation(fattr.per_example(f))(params, x[0], 1)


@pytest.mark.parametrize("name", [n for n in ALL if n != "feature_permutation"])
def test_bad_baseline(setup, name):
    _, f, params, x, target = setup
    with pytest.raises(fattr.FattrError, match=rf"^{name}: baseline of shape \(2, 1, 8, 8\) "
                                               "does not broadcast"):
        ALL[name](f)(params, x, target, baseline=torch.zeros(2, 1, 8, 8))


@pytest.mark.parametrize("name", ALL)
def test_bad_target_and_input(setup, name):
    _, f, params, x, target = setup
    mask = {} if name == "occlusion" else {"feature_mask": FIVE}
    with pytest.raises(fattr.FattrError, match=f"^{name}: target 4 is out of range"):
        ALL[name](f)(params, x, 4, **mask)
    bad = x.clone()
    bad[0, 0, 0, 0] = float("nan")
    with pytest.raises(fattr.FattrError, match=f"^{name}: x contains NaN"):
        ALL[name](f)(params, bad, target, **mask)


@pytest.mark.parametrize("name", ALL)
def test_training_mode_is_refused_and_model_unchanged(name):
    net, x, target, _ = image_case()
    f, params = fattr.functional(net)
    before = state_snapshot(net)
    extra = {"generator": seeded(1)} if name in ("feature_permutation", "shapley_value_sampling",
                                                 "kernel_shap", "lime") else {}
    mask = {} if name == "occlusion" else {"feature_mask": FIVE}
    ALL[name](f)(params, x, target, **mask, **extra)
    assert_unchanged(net, before)
    net.train()
    try:
        with pytest.raises(fattr.FattrError, match=rf"^{name}: .*BatchNorm2d.*Call model.eval"):
            ALL[name](f)(params, x, target, **mask, **extra)
    finally:
        net.eval()
    assert_unchanged(net, before)
    with pytest.raises(fattr.FattrError):  # an error inside a call leaves nothing behind
        ALL[name](f)(params, x, 9, **mask, **extra)
    assert_unchanged(net, before)


@pytest.mark.parametrize("name, given, match", [
    ("feature_ablation", {"generator": None}, "unexpected argument generator=; this method "
                                              "takes baseline=, feature_mask="),
    ("shapley_values", {"baselines": 0.0}, "unexpected argument baselines="),
    ("feature_permutation", {"baseline": 0.0}, "unexpected argument baseline=; this method "
                                               "takes feature_mask=, generator="),
    ("occlusion", {"feature_mask": FIVE}, "unexpected argument feature_mask=; this method takes "
                                          "baseline="),
])
def test_unexpected_per_call_arguments(setup, name, given, match):
    _, f, params, x, target = setup
    with pytest.raises(fattr.FattrTypeError, match=f"^{name}: {match}"):
        ALL[name](f)(params, x, target, **given)
