"""CAV, TCAV and the significance test: the definition by hand, captum's TCAV with the same
CAV, a planted concept, the t-test against scipy, and differentiability."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

import fattr
from fattr.concepts.tcav_significance import student_t_test
from fattr.run.digits import trained_digits_cnn
from tests.conftest import directional_derivative, one_thread


def strokes(n: int, row: int, generator: torch.Generator) -> torch.Tensor:
    """Hand-made concept images: a 5-pixel horizontal stroke in `row` on faint noise."""
    x = 0.05 * torch.rand(n, 1, 8, 8, generator=generator)
    start = torch.randint(0, 3, (n,), generator=generator)
    cols = torch.arange(8)
    on = (cols >= start[:, None]) & (cols < start[:, None] + 5)
    x[:, 0, row] = torch.where(on, 1.0, x[:, 0, row])
    return x


@pytest.fixture(scope="module")
def digits():
    with one_thread():
        model, data = trained_digits_cnn(seed=0, epochs=10)
    return model, data


def random_sets(x: torch.Tensor, n: int, m: int, generator: torch.Generator):
    order = torch.randperm(len(x), generator=generator)
    return [x[order[i * n:(i + 1) * n]] for i in range(m)]


def test_tcav_with_a_given_cav_is_the_definition_by_hand():
    torch.manual_seed(0)
    from fattr.run.digits import digits_cnn

    model = digits_cnn().double().eval()
    f, params = fattr.functional(model)
    x = torch.rand(23, 1, 8, 8, dtype=torch.float64)
    target = torch.randint(0, 10, (23,))
    vectors = torch.randn(3, 32 * 4 * 4, dtype=torch.float64)
    # by hand: cut the model after layer 4 and differentiate the rest at h
    h = model[:5](x).detach().requires_grad_()
    model[5:](h).gather(1, target[:, None]).sum().backward()
    expected = h.grad.flatten(1) @ vectors.T
    derivatives = fattr.concepts.directional_derivatives(f, "4", vectors)(params, x, target)
    torch.testing.assert_close(derivatives, expected, rtol=1e-12, atol=1e-14)
    scores = fattr.concepts.tcav(f, model[4], vectors, batch_size=5)(params, x, target)
    torch.testing.assert_close(scores, (expected > 0).double().mean(0).to(scores.dtype))
    assert scores.shape == (3,) and 0 < scores.min() and scores.max() < 1


def test_tcav_equals_captums_sign_count_for_the_same_cav(tmp_path, digits):
    from captum.concept import TCAV, Concept
    from captum.concept._utils.classifier import Classifier

    model, (x_train, _, x_test, y_test) = digits
    f, params = fattr.functional(model)
    g = torch.Generator().manual_seed(0)
    concept, randoms = strokes(30, 1, g), x_train[:30]
    ours = fattr.concepts.cav(f, params, "4", concept, randoms, generator=g)

    class Given(Classifier):  # captum's TCAV with fattr's vector as its classifier weights
        def __init__(self):
            pass

        def train_and_eval(self, dataloader, **kwargs):
            return {"accs": ours.accuracy}

        def weights(self):
            return torch.stack([ours.vector, -ours.vector])

        def classes(self):
            return [0, 1]

    stroke = Concept(0, "stroke", iter([concept]))
    random = Concept(1, "random", iter([randoms]))
    peer = TCAV(model, ["4"], classifier=Given(), save_path=str(tmp_path))
    sevens = x_test[y_test == 7]
    theirs = peer.interpret(sevens, [[stroke, random]], target=7)["0-1"]["4"]["sign_count"]
    mine = fattr.concepts.tcav(f, "4", [ours])(params, sevens, 7)
    torch.testing.assert_close(mine, theirs[:1])


@pytest.mark.parametrize("classifier", ["logistic", "ridge"])
def test_a_cav_separates_a_planted_concept(digits, classifier):
    model, (x_train, _, _, _) = digits
    f, params = fattr.functional(model)
    g = torch.Generator().manual_seed(0)
    c = fattr.concepts.cav(f, params, "4", strokes(60, 1, g), x_train[:60],
                           classifier=classifier, generator=g)
    assert c.vector.shape == (512,) and c.layer == "4"
    assert abs(c.vector.norm().item() - 1) < 1e-6
    assert c.accuracy >= 0.9
    # the same data and generator state give the same CAV (the fit is deterministic)
    again = fattr.concepts.cav(f, params, "4", strokes(60, 1, torch.Generator().manual_seed(0)),
                               x_train[:60], classifier=classifier,
                               generator=_advanced(torch.Generator().manual_seed(0)))
    torch.testing.assert_close(again.vector, c.vector)


def _advanced(g: torch.Generator) -> torch.Generator:
    strokes(60, 1, g)  # the draws `strokes` made before the split
    return g


def test_significance_for_a_planted_concept_and_not_for_a_random_set(digits):
    """A top stroke for class 7 (the bar of a seven) against 8 random sets of 40 digits."""
    model, (x_train, _, x_test, y_test) = digits
    f, params = fattr.functional(model)
    sevens = x_test[y_test == 7]
    for seed in (0, 1):
        g = torch.Generator().manual_seed(seed)
        concept = strokes(40, 1, g)
        randoms = random_sets(x_train, 40, 8, g)
        planted = fattr.concepts.tcav_significance(
            f, params, "4", concept, randoms, sevens, 7,
            generator=torch.Generator().manual_seed(0))
        assert planted.scores.shape == planted.random_scores.shape == (7,)
        assert planted.scores.mean() > 0.9, planted
        assert planted.p_value < 0.05, planted
        # a random set playing the concept: no significant difference
        null = fattr.concepts.tcav_significance(
            f, params, "4", randoms[-1], randoms[:-1], sevens, 7,
            generator=torch.Generator().manual_seed(0))
        assert null.p_value >= 0.05, null


def test_student_t_test_equals_scipy():
    from scipy.stats import ttest_ind

    rng = np.random.default_rng(0)
    for a, b in [(rng.random(7), rng.random(7) + 0.3), (rng.random(5), rng.random(9))]:
        expected = ttest_ind(a, b).pvalue
        assert abs(student_t_test(torch.tensor(a), torch.tensor(b)).item() - expected) < 1e-12
    same = torch.ones(4)
    assert student_t_test(same, same).item() == 1.0
    assert student_t_test(same, same * 0).item() == 0.0


def test_directional_derivatives_are_differentiable_in_params():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(5, 6), nn.Tanh(), nn.Linear(6, 3)).double().eval()
    f, params = fattr.functional(model)
    x = torch.randn(4, 5, dtype=torch.float64)
    vectors = torch.randn(2, 6, dtype=torch.float64)
    dd = fattr.concepts.directional_derivatives(f, "1", vectors)

    def loss(p):
        return dd(p, x, 1).pow(2).sum()

    check = directional_derivative(loss, dict(params))
    torch.testing.assert_close(check.analytic, check.numeric, rtol=1e-6, atol=1e-9)
    assert check.analytic.abs() > 1e-6
