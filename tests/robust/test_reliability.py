"""Bad input to the attacks gets a message that names the argument and the fix."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import fattr
from fattr.errors import FattrError, FattrTypeError
from tests.conftest import assert_unchanged, state_snapshot


@pytest.fixture
def setup():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 5), nn.ReLU(), nn.Linear(5, 3)).double().eval()
    f, params = fattr.functional(model)
    return model, f, params, torch.rand(6, 4, dtype=torch.float64), torch.tensor([0, 1, 2] * 2)


@pytest.mark.parametrize("make, match", [
    (lambda f: fattr.robust.fgsm(f, -0.1), "fgsm: epsilon must be a number >= 0"),
    (lambda f: fattr.robust.fgsm(f, "big"), "fgsm: epsilon must be a number >= 0"),
    (lambda f: fattr.robust.fgsm(f, 0.1, targeted=1), "targeted must be True or False"),
    (lambda f: fattr.robust.fgsm(f, 0.1, bounds=(1.0, 0.0)), "need low <= high"),
    (lambda f: fattr.robust.fgsm(f, 0.1, bounds=[0, 1]), "bounds must be a \\(low, high\\) "
                                                         "pair"),
    (lambda f: fattr.robust.fgsm(f, 0.1, loss="ce"), "loss must be callable"),
    (lambda f: fattr.robust.pgd(f, 0.1, 0.01, 3, norm="L1"), "norm must be one of \\('Linf', "
                                                            "'L2'\\), got 'L1'"),
    (lambda f: fattr.robust.pgd(f, 0.1, 0.01, -1), "steps must be an int >= 0"),
    (lambda f: fattr.robust.pgd(f, 0.1, -0.01, 3), "step_size must be a number >= 0"),
    (lambda f: fattr.robust.pgd(f, 0.1, 0.01, 3, random_start=None), "random_start must be"),
    (lambda f: fattr.robust.min_param_perturbation(f, None, [0.1]), "attack must be callable"),
    (lambda f: fattr.robust.min_param_perturbation(f, lambda *a: a[1], [0.2, 0.1]),
     "values must be a non-empty 1-D ascending sequence"),
    (lambda f: fattr.robust.min_param_perturbation(f, lambda *a: a[1], [0.1], mode="fast"),
     "mode must be one of \\('linear', 'binary'\\)"),
    (lambda f: fattr.robust.attack_comparator(f, [fattr.robust.fgsm(f, 0.1)]),
     "attacks must be a dict"),
    (lambda f: fattr.robust.attack_comparator(f, {"original": lambda p, x, t: x}),
     "'original' is reserved"),
    (lambda f: fattr.robust.attack_comparator(f, {}, attempts=0), "attempts must be an int >= 1"),
])
def test_bad_configuration(setup, make, match):
    _, f, _, _, _ = setup
    with pytest.raises(FattrError, match=match):
        make(f)


def test_bad_calls(setup):
    model, f, params, x, y = setup
    before = state_snapshot(model)
    attack = fattr.robust.pgd(f, 0.1, 0.05, 2)
    with pytest.raises(FattrError, match="pgd: target is required"):
        attack(params, x)
    with pytest.raises(FattrError, match="pgd: target 3 is out of range for the output of shape "
                                         "\\(6, 3\\)"):
        attack(params, x, 3)
    with pytest.raises(FattrError, match="per-example target needs one index per example"):
        attack(params, x, y[:4])
    with pytest.raises(FattrError, match="mask of shape \\(6, 5\\) does not broadcast to x"):
        attack(params, x, y, mask=torch.ones(6, 5))
    with pytest.raises(FattrError, match="radius must be a number or one per example, shape "
                                         "\\(6,\\)"):
        fattr.robust.pgd(f, torch.ones(4, dtype=torch.float64), 0.1, 1)(params, x, y)
    with pytest.raises(FattrError, match="x contains NaN or Inf"):
        attack(params, x * float("nan"), y)
    with pytest.raises(FattrError, match="must return per-example losses of shape \\(6,\\)"):
        fattr.robust.fgsm(f, 0.1, loss=lambda out, t: out)(params, x, y)
    with pytest.raises(FattrError, match="correct\\(out, target\\) must return one bool per "
                                         "example"):
        fattr.robust.min_param_perturbation(
            f, lambda p, x, t, v: x, [0.1], correct=lambda out, t: True)(params, x, y)
    assert_unchanged(model, before)


def test_a_model_in_training_mode(setup):
    model, f, params, x, y = setup
    model.append(nn.Dropout()).train()
    with pytest.raises(FattrError, match="fgsm: '3' \\(Dropout\\) is in training mode"):
        fattr.robust.fgsm(f, 0.1)(params, x, y)


def test_wrong_kind_of_argument(setup):
    _, f, params, x, y = setup
    with pytest.raises(FattrTypeError, match="mask must be a tensor of 0s and 1s"):
        fattr.robust.fgsm(f, 0.1)(params, x, y, mask=[1, 0])
