"""Bad input to a metric gets a clear error that names the metric and the argument; the
model is unchanged afterwards."""

from __future__ import annotations

import pytest
import torch

import fattr
from tests.conftest import assert_unchanged, forward_calls, small_cnn, state_snapshot

m = fattr.metrics
X = torch.randn(2, 1, 8, 8, dtype=torch.float64)
A = torch.randn(2, 1, 8, 8, dtype=torch.float64)


def cases():
    nan = A.clone()
    nan[0, 0, 0, 0] = float("nan")
    return [
        (lambda f, p: m.deletion(f, p, X, A[:1], 0),
         "deletion: attribution has shape \\(1, 1, 8, 8\\) but x has shape \\(2, 1, 8, 8\\)"),
        (lambda f, p: m.insertion(f, p, X, A[..., :4], 0), "insertion: attribution has shape"),
        (lambda f, p: m.deletion(f, p, X, A.expand(2, 3, 8, 8), 0),
         "attribution has shape \\(2, 3, 8, 8\\) but x"),
        (lambda f, p: m.deletion(f, p, X, A.numpy(), 0), "attribution must be a torch.Tensor"),
        (lambda f, p: m.deletion(f, p, X, nan, 0), "attribution contains NaN or Inf"),
        (lambda f, p: m.deletion(f, p, X, A, 0, steps=0), "deletion: steps must be an int >= 1"),
        (lambda f, p: m.deletion(f, p, X, A, 0, batch_size=0), "batch_size must be a positive"),
        (lambda f, p: m.deletion(f, p, X, A, 0, baseline=torch.zeros(3)),
         "baseline of shape \\(3,\\) does not broadcast"),
        (lambda f, p: m.deletion(f, p, X, A, 7), "target 7 is out of range"),
        (lambda f, p: m.deletion(f, p, X.long(), A, 0), "floating-point"),
        (lambda f, p: m.insertion(f, p, X, A, 0, sigma=0.0), "sigma must be > 0"),
        (lambda f, p: m.road(f, p, X.flatten(1), A.flatten(1), 0), "x must be images"),
        (lambda f, p: m.road(f, p, X, A, 0, order="up"), "order must be 'morf'"),
        (lambda f, p: m.road(f, p, X, A, 0, noise=-1.0), "noise must be >= 0"),
        (lambda f, p: m.infidelity(f, p, X, A, 0, torch.randn(3, 2, 1, 8)),
         "perturbations must have shape \\(S, \\*\\(2, 1, 8, 8\\)\\)"),
        (lambda f, p: m.infidelity(f, p, X, A, 0, samples=0), "samples must be an int >= 1"),
        (lambda f, p: m.infidelity(f, p, X, A, 0, stdev=-1.0), "stdev must be >= 0"),
        (lambda f, p: m.infidelity(f, p, X, A[:, :, :1], 0), "infidelity: attribution has shape"),
        (lambda f, p: m.sensitivity_max(fattr.saliency(f), p, X, 0, torch.randn(2, 1, 8, 8)),
         "perturbations must have shape"),
        (lambda f, p: m.sensitivity_max("saliency", p, X, 0), "attr_fn must be an attribution"),
        (lambda f, p: m.sensitivity_max(fattr.saliency(f), p, X, 0, radius=-0.1),
         "radius must be >= 0"),
        (lambda f, p: m.selectivity(f, p, X, fattr.saliency(fattr.per_example(f)), 0),
         "the model is batched but attr_fn is not"),
        (lambda f, p: m.selectivity(f, p, X, fattr.saliency(f), 0, per_step=0),
         "per_step must be an int >= 1"),
        (lambda f, p: m.selectivity(f, p, X, lambda p_, x, t: x[:, :, :2], 0),
         "the attribution has shape \\(2, 1, 2, 8\\)"),
        (lambda f, p: m.completeness(f, p, X, A[0], 0),
         "completeness: attribution has shape \\(1, 8, 8\\) but x has shape"),
    ]


@pytest.mark.parametrize("index", range(len(cases())))
def test_bad_input_raises_and_leaves_the_model(index):
    call, match = cases()[index]
    net = small_cnn(classes=3)
    before = state_snapshot(net)
    f, params = fattr.functional(net)
    with pytest.raises((ValueError, TypeError), match=match):
        call(f, params)
    assert_unchanged(net, before)


def test_training_mode_is_refused():
    net = small_cnn().train()
    f, params = fattr.functional(net)
    with pytest.raises(ValueError, match="deletion: '1' \\(BatchNorm2d\\) is in training mode"):
        m.deletion(f, params, X, A, 0)


def test_empty_perturbation_set_and_empty_batch():
    net = small_cnn()
    f, params = fattr.functional(net)
    with pytest.raises(ValueError, match="S >= 1"):
        m.infidelity(f, params, X, A, 0, torch.zeros(0, 2, 1, 8, 8, dtype=torch.float64))
    empty = m.deletion(f, params, X[:0], A[:0], 0, steps=3)
    assert empty.shape == (0,)
    for metric in (m.insertion, m.pixel_flipping, m.road, m.infidelity):
        assert metric(f, params, X[:0], A[:0], 0).shape == (0,)
    assert m.sensitivity_max(fattr.saliency(f), params, X[:0], 0).shape == (0,)
    assert m.selectivity(f, params, X[:0], fattr.saliency(f), 0).shape == (0,)


@pytest.mark.parametrize("name, call", [
    ("completeness", lambda f, p: m.completeness(f, p, X, A, 0)),
    ("model_randomization", lambda f, p: m.model_randomization(f, p, X, 0, fattr.saliency)),
    ("infidelity", lambda f, p: m.infidelity(f, p, X, A, 0)),
    ("selectivity", lambda f, p: m.selectivity(f, p, X, fattr.saliency(f), 0)),
])
def test_training_mode_is_refused_before_any_forward_pass(name, call):
    """No forward pass runs, so BatchNorm's running statistics are bit-identical afterwards."""
    net = small_cnn().train()
    before = state_snapshot(net)
    f, params = fattr.functional(net)

    def attempt():
        with pytest.raises(fattr.FattrError,
                           match=f"^{name}: '1' \\(BatchNorm2d\\) is in training mode"):
            call(f, params)

    assert forward_calls(net, attempt) == 0
    assert_unchanged(net, before)
    assert int(net[1].num_batches_tracked) == 0


def test_pointing_game_does_not_score_a_blank_map():
    mask = torch.zeros(3, 1, 4, 4, dtype=torch.bool)
    mask[:, :, 0, 0] = True  # the first element, where argmax lands on ties
    a = torch.zeros(3, 1, 4, 4, dtype=torch.float64)
    a[1] = 2.5      # constant: blank too
    a[2, 0, 0, 0] = 1.0  # a real peak inside the mask
    assert m.pointing_game(a, mask).tolist() == [0.0, 0.0, 1.0]
    assert m.pointing_game(a, mask, tolerance=1).tolist() == [0.0, 0.0, 1.0]


def nonfinite(kind: str):
    value = float(kind)
    return [value, torch.full((1, 8, 8), value, dtype=torch.float64)]


@pytest.mark.parametrize("kind", ["nan", "inf"])
@pytest.mark.parametrize("name, call", [
    ("deletion", lambda f, p, b: m.deletion(f, p, X, A, 0, baseline=b)),
    ("insertion", lambda f, p, b: m.insertion(f, p, X, A, 0, baseline=b)),
    ("pixel_flipping", lambda f, p, b: m.pixel_flipping(f, p, X, A, 0, baseline=b)),
    ("completeness", lambda f, p, b: m.completeness(f, p, X, A, 0, b)),
    ("selectivity", lambda f, p, b: m.selectivity(f, p, X, fattr.saliency(f), 0, fill=b)),
])
def test_non_finite_baselines_are_refused(kind, name, call):
    net = small_cnn(classes=3)
    f, params = fattr.functional(net)
    what = "fill" if name == "selectivity" else "baseline"
    for value in nonfinite(kind):
        with pytest.raises(fattr.FattrError, match=f"^{name}: {what} contains NaN or Inf"):
            call(f, params, value)


@pytest.mark.parametrize("call, match", [
    (lambda f, p: m.sensitivity_max(f, p, X, 0),
     "sensitivity_max: attr_fn is the model functional\\(Sequential\\), but an attribution "
     "function is expected: build one from the model function, e.g. "
     "attr_fn=fattr.saliency\\(f\\)"),
    (lambda f, p: m.sensitivity_max(f.module, p, X, 0), "sensitivity_max: attr_fn is the model"),
    (lambda f, p: m.selectivity(f, p, X, f, 0), "selectivity: attr_fn is the model"),
    (lambda f, p: m.deletion(fattr.saliency(f), p, X, A, 0),
     "deletion: f is the attribution function saliency, but this metric takes the model "
     "function itself"),
    (lambda f, p: m.infidelity(fattr.saliency(f), p, X, A, 0),
     "infidelity: f is the attribution function saliency"),
    (lambda f, p: m.completeness(fattr.integrated_gradients(f), p, X, A, 0),
     "completeness: f is the attribution function integrated_gradients"),
    (lambda f, p: m.road(fattr.saliency(f), p, X, A, 0), "road: f is the attribution function"),
    (lambda f, p: m.deletion(f.module, p, X, A, 0), "deletion: got the module Sequential"),
    (lambda f, p: m.model_randomization(f, p, X, 0, fattr.saliency(f)),
     "model_randomization: method got the attribution function saliency, but it must map a "
     "model function to an attribution function"),
    (lambda f, p: m.model_randomization(fattr.saliency(f), p, X, 0, fattr.saliency),
     "model_randomization: f is the attribution function saliency"),
    (lambda f, p: m.model_randomization(f, p, X, 0, fattr.saliency, similarity=3),
     "similarity must be one of spearman"),
    (lambda f, p: m.trigger_benchmark({"s": fattr.saliency(f)}),
     "trigger_benchmark: methods\\['s'\\] got the attribution function saliency"),
    (lambda f, p: m.trigger_benchmark({"s": fattr.saliency}, data=[1, 2]),
     "trigger_benchmark: data must be \\(x_train, y_train, x_test, y_test\\) tensors"),
    (lambda f, p: m.trigger_benchmark({"s": fattr.saliency}, train="cnn"),
     "trigger_benchmark: train must be a function"),
    (lambda f, p: m.pointing_game(A.numpy(), A > 0), "pointing_game: attribution must be a"),
    (lambda f, p: m.sparseness([A]), "sparseness: attribution must be a floating-point tensor"),
    (lambda f, p: m.roar(lambda x, y: None, (X, X, X, X), A), "roar: attributions must be a pair"),
] + [
    (call, f"{name}: generator must be a torch.Generator or None, got int")
    for name, call in [
        ("infidelity", lambda f, p: m.infidelity(f, p, X, A, 0, generator=0)),
        ("pixel_flipping", lambda f, p: m.pixel_flipping(f, p, X, A, 0, generator=0)),
        ("road", lambda f, p: m.road(f, p, X, A, 0, generator=0)),
        ("sensitivity_max", lambda f, p: m.sensitivity_max(fattr.saliency(f), p, X, 0,
                                                           generator=0)),
        ("model_randomization", lambda f, p: m.model_randomization(f, p, X, 0, fattr.saliency,
                                                                   0)),
        ("trigger_benchmark", lambda f, p: m.trigger_benchmark({"s": fattr.saliency},
                                                               generator=0)),
        ("kar", lambda f, p: m.kar(lambda x, y: None, (X, X, X, X), (A, A), generator=0)),
    ]
])
def test_wrong_kinds_are_type_errors(call, match):
    net = small_cnn(classes=3)
    before = state_snapshot(net)
    f, params = fattr.functional(net)
    with pytest.raises(fattr.FattrTypeError, match=match):
        call(f, params)
    assert_unchanged(net, before)


@pytest.mark.parametrize("kwargs, match", [
    ({"fraction": 2.0}, "fraction must be a number in \\(0, 1\\] \\(the triggered copies added, "
     "as a share of the training set\\), got 2.0"),
    ({"fraction": 0.0}, "fraction must be a number in \\(0, 1\\]"),
    ({"fraction": float("nan")}, "fraction must be a number in \\(0, 1\\]"),
    ({"fraction": "half"}, "fraction must be a number in \\(0, 1\\]"),
    ({"size": 0}, "size must be an int >= 1"),
    ({"sign": "all"}, "sign must be 'absolute' or 'positive'"),
    ({"data": (X, torch.tensor([0.5, 1.5]), X, torch.tensor([0, 1]))},
     "data needs a non-empty training set and one integer class 0..K-1 per image"),
    ({"data": (X.flatten(1), torch.tensor([0, 1]), X.flatten(1), torch.tensor([0, 1]))},
     "data must hold images \\(N, C, H, W\\)"),
])
def test_trigger_benchmark_refuses_out_of_range_arguments_before_training(kwargs, match):
    trained = []
    train = lambda x, y: trained.append(1)
    with pytest.raises(fattr.FattrError, match=f"^trigger_benchmark: {match}"):
        m.trigger_benchmark({"saliency": fattr.saliency}, train=train, **kwargs)
    assert not trained


@pytest.mark.parametrize("call, match", [
    (lambda f, p: m.sensitivity_max(fattr.saliency(f), p, X, 0, n_steps=4),
     "saliency: unexpected argument n_steps="),
    (lambda f, p: m.infidelity(f, p, X, A, 0, normalize="yes"),
     "infidelity: normalize must be True or False"),
    (lambda f, p: m.insertion(f, p, X, A, 0, sigma="5"), "insertion: sigma must be > 0"),
    (lambda f, p: m.road(f, p, X, A, 0, noise="a"), "road: noise must be >= 0"),
    (lambda f, p: m.relevance_mass(A, A > 0, sign=["absolute"]),
     "relevance_mass: sign must be 'absolute' or 'positive'"),
])
def test_other_bad_arguments(call, match):
    f, params = fattr.functional(small_cnn(classes=3))
    with pytest.raises(fattr.FattrError, match=match):
        call(f, params)
