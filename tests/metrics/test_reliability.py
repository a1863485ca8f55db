"""Bad input to a metric gets a clear error that names the metric and the argument; the
model is unchanged afterwards."""

from __future__ import annotations

import pytest
import torch

import fattr
from tests.conftest import assert_unchanged, small_cnn, state_snapshot

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
