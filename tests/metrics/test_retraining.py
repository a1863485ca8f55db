"""ROAR and KAR on scikit-learn's digits with the small CNN of fattr.data.digits, and the
planted-trigger benchmark."""

from __future__ import annotations

import pytest
import torch

import fattr
from fattr.data.digits import digits_cnn, train
from tests.conftest import one_thread


def trainer(x, y):
    torch.manual_seed(1)
    with one_thread():
        return train(digits_cnn(), x, y, epochs=5, seed=1)


@pytest.fixture(scope="module")
def rankings(digits_model):
    model, data = digits_model
    f, params = fattr.functional(model)
    ig = fattr.integrated_gradients(f, steps=8)
    return data, ig(params, data[0], data[1]), ig(params, data[2], data[3])


def test_roar_with_a_dataset_ranking_falls_below_random(rankings):
    """A ranking shared by all inputs (mean |IG| over the training set) cannot leak the class
    through the shape of what was removed; removing its top pixels hurts far more than
    removing random ones, even after retraining."""
    data, a_train, a_test = rankings
    shared = a_train.abs().mean(0, keepdim=True)
    curve = fattr.metrics.roar(trainer, data, (shared.expand_as(a_train),
                                               shared.expand_as(a_test)),
                               fractions=(0.5, 0.8), generator=torch.Generator().manual_seed(0))
    assert isinstance(curve, fattr.metrics.RetrainingCurve)
    assert curve.fractions.tolist() == [0.5, 0.8]
    assert curve.accuracy.shape == curve.random.shape == (2,)
    assert bool((curve.accuracy < curve.random - 0.1).all()), curve
    assert bool(curve.random[1] < curve.random[0])  # more removed, less accuracy


def test_kar_with_per_example_ig_stays_above_random(rankings):
    """KAR keeps the top-ranked pixels of every input: with IG's ranking the retrained model
    stays accurate, with a random one it does not."""
    data, a_train, a_test = rankings
    curve = fattr.metrics.kar(trainer, data, (a_train, a_test), fractions=(0.7,),
                              generator=torch.Generator().manual_seed(0))
    assert curve.accuracy.shape == (1,)
    assert curve.accuracy[0] > 0.85 and curve.accuracy[0] > curve.random[0] + 0.2, curve


def test_removal_uses_the_per_channel_training_mean():
    """Zero fraction trains on the data as is; fraction 1 replaces everything with the mean, so
    a model can only guess (one class)."""
    seen = []

    def spy(x, y):
        seen.append(x)
        return lambda inputs: torch.nn.functional.one_hot(torch.zeros(len(inputs)).long(), 3)

    x = torch.rand(6, 2, 3, 3)
    y = torch.tensor([0, 1, 2, 0, 1, 2])
    data = (x, y, x[:3], y[:3])
    a = (torch.rand(6, 1, 3, 3), torch.rand(3, 1, 3, 3))
    curve = fattr.metrics.roar(spy, data, a, fractions=(0.0, 1.0))
    assert torch.equal(seen[0], x)
    torch.testing.assert_close(seen[2], x.mean((0, 2, 3), keepdim=True).expand_as(x))
    torch.testing.assert_close(curve.accuracy, torch.tensor([1 / 3, 1 / 3], dtype=torch.float64))


def test_trigger_benchmark_finds_the_trigger():
    def train8(x, y):
        with one_thread():
            return train(digits_cnn(), x, y, epochs=8, seed=0)

    result = fattr.metrics.trigger_benchmark(
        {"ig": lambda f: fattr.integrated_gradients(f, steps=16),
         "random": lambda f: (lambda params, x, target: torch.rand(x.shape))},
        train=train8, generator=torch.Generator().manual_seed(0))
    n = result.x.shape[0]
    assert n > 100 and result.success > 0.8 and result.accuracy > 0.9, result[:4]
    assert result.scores["ig"].shape == (n,) and result.mask.shape == (n, 1, 8, 8)
    torch.testing.assert_close(result.chance, torch.tensor(4 / 64))
    assert abs(result.scores["random"].mean() - result.chance) < 0.02
    assert result.scores["ig"].mean() > 4 * result.chance, result.scores["ig"].mean()
    # the flipped inputs carry their trigger and the model predicts the trigger's class
    with torch.no_grad():
        assert torch.equal(result.model(result.x).argmax(1), result.target)


@pytest.mark.parametrize("call, match", [
    (lambda d, a: fattr.metrics.roar("train", d, a), "train must be a function"),
    (lambda d, a: fattr.metrics.roar(trainer, d[:3], a), "data must be \\(x_train, y_train"),
    (lambda d, a: fattr.metrics.roar(trainer, d, a[:1]), "attributions must be a pair"),
    (lambda d, a: fattr.metrics.kar(trainer, d, (a[0][:, :, :2], a[1])),
     "a_train has shape \\(6, 1, 2, 3\\) but x_train has shape \\(6, 2, 3, 3\\)"),
    (lambda d, a: fattr.metrics.kar(trainer, d, a, fractions=(0.5, 1.5)),
     "fractions must be a non-empty sequence of numbers in \\[0, 1\\]"),
    (lambda d, a: fattr.metrics.kar(trainer, d, a, fractions=()), "non-empty"),
    (lambda d, a: fattr.metrics.trigger_benchmark(fattr.saliency), "methods must be a non-empty"),
    (lambda d, a: fattr.metrics.trigger_benchmark({"s": fattr.saliency}, data=d, size=2),
     "3 classes need 3 non-overlapping 2x2 triggers, but 3x3 images hold 1"),
])
def test_errors(call, match):
    x = torch.rand(6, 2, 3, 3)
    y = torch.tensor([0, 1, 2, 0, 1, 2])
    data = (x, y, x[:3], y[:3])
    a = (torch.rand(6, 1, 3, 3), torch.rand(3, 1, 3, 3))
    with pytest.raises((ValueError, TypeError), match=match):
        call(data, a)
