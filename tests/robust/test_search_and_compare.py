"""min_param_perturbation (linear and binary search, per example) and attack_comparator."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from captum.robust import FGSM, MinParamPerturbation
from torch import nn

import fattr


def cross_entropy(out, target):
    return F.cross_entropy(out, target, reduction="none")


@pytest.fixture
def linear():
    """Two classes, logits W x: moving x along -(w1 - w0) lowers the margin at rate |w1-w0|^2."""
    torch.manual_seed(0)
    model = nn.Linear(5, 2, bias=False).double().eval()
    f, params = fattr.functional(model)
    x = torch.randn(12, 5, dtype=torch.float64)
    y = model(x).argmax(1)
    return model, f, params, x, y


def shift(model):
    w = model.weight.detach()

    def attack(params, x, target, s):
        towards = torch.where(target[:, None] == 1, w[0] - w[1], w[1] - w[0])
        return x + s[:, None] * towards
    return attack


def test_linear_and_binary_search_find_the_first_value_that_flips(linear):
    model, f, params, x, y = linear
    w = model.weight.detach()
    margin = (model(x).gather(1, y[:, None]) - model(x).gather(1, 1 - y[:, None])).squeeze(1)
    threshold = margin / (w[1] - w[0]).pow(2).sum()  # where the margin reaches 0
    values = torch.linspace(0.0, threshold.quantile(0.6).item(), 61, dtype=torch.float64)
    expected_index = (values[None, :] > threshold[:, None]).float().argmax(1)
    expected_found = threshold < values[-1]
    for mode in ("linear", "binary"):
        res = fattr.robust.min_param_perturbation(f, shift(model), values, mode=mode)(
            params, x, y)
        assert torch.equal(res.found, expected_found), mode
        torch.testing.assert_close(res.value[res.found], values[expected_index][res.found])
        assert res.value[~res.found].isnan().all()
        assert (f(params, res.adversarial).argmax(1)[res.found] != y[res.found]).all()
        assert torch.equal(res.adversarial[~res.found], x[~res.found])
    assert expected_found.any() and not expected_found.all()


def test_per_example_search_equals_captum_on_each_example():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(6, 10), nn.Tanh(), nn.Linear(10, 3)).double().eval()
    f, params = fattr.functional(model)
    x = torch.rand(6, 6, dtype=torch.float64)
    y = model(x).argmax(1)
    values, v = [], 0.0
    while v < 1.0:  # captum's drange, with its accumulated rounding
        values.append(v)
        v += 0.05

    def fgsm_at(p, inputs, target, eps):
        return fattr.robust.fgsm(f, eps, bounds=(0.0, 1.0))(p, inputs, target)

    ours = fattr.robust.min_param_perturbation(f, fgsm_at, values)(params, x, y)
    peer_attack = FGSM(model, cross_entropy, 0.0, 1.0)
    for i in range(6):
        peer = MinParamPerturbation(model, peer_attack, "epsilon", 0.0, 1.0, 0.05)
        adv, value = peer.evaluate(x[i:i + 1], target=y[i:i + 1],
                                   attack_kwargs={"target": y[i:i + 1]})
        if value is None:
            assert not ours.found[i]
        else:
            assert ours.found[i] and abs(ours.value[i].item() - value) < 1e-12
            torch.testing.assert_close(ours.adversarial[i:i + 1], adv)
    assert ours.found.sum() >= 2


def test_attack_comparator(linear):
    _, f, params, x, y = linear
    attacks = {"fgsm": fattr.robust.fgsm(f, 0.3),
               "pgd": fattr.robust.pgd(f, 0.5, 0.2, 4, random_start=True)}
    compare = fattr.robust.attack_comparator(f, attacks, attempts=3)
    result = compare(params, x, y, generator=torch.Generator().manual_seed(0))
    assert list(result) == ["original", "fgsm", "pgd"]
    assert torch.equal(result["original"].mean, (f(params, x).argmax(1) == y).double())
    fgsm = (f(params, attacks["fgsm"](params, x, y)).argmax(1) == y).double()
    for value in result["fgsm"]:  # deterministic: one run, mean == min == max
        torch.testing.assert_close(value, fgsm.to(value.dtype))
    pgd = result["pgd"]
    assert (pgd.min <= pgd.mean).all() and (pgd.mean <= pgd.max).all()
    assert pgd.min.mean() < result["original"].mean.mean()
    g = torch.Generator().manual_seed(0)
    runs = torch.stack([(f(params, attacks["pgd"](params, x, y, g)).argmax(1) == y).double()
                        for _ in range(3)])
    torch.testing.assert_close(pgd.mean, runs.mean(0).to(pgd.mean.dtype))
    accuracy = fattr.robust.attack_comparator(
        f, attacks, metric=lambda out, t: (out.argmax(1) == t).double().mean())(params, x, y)
    assert accuracy["fgsm"].mean.shape == ()
