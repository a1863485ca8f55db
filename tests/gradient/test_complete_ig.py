"""Integrated gradients with `complete=True`: exact completeness, the same composition rules as
plain IG, and an attribution no farther from the converged integral than plain IG's."""

from __future__ import annotations

import pytest
import torch

import fattr
from tests.conftest import small_cnn


@pytest.fixture
def cnn():
    f, params = fattr.functional(small_cnn())
    x = torch.randn(5, 1, 8, 8, dtype=torch.float64)
    return f, params, x, torch.tensor([0, 1, 2, 3, 0])


@pytest.mark.parametrize("method, steps", [("gausslegendre", 8), ("riemann_trapezoid", 5),
                                           ("riemann_middle", 3)])
def test_complete_ig_is_exactly_complete(cnn, method, steps):
    f, params, x, t = cnn
    baseline = 0.3 * torch.randn_like(x)
    plain = fattr.integrated_gradients(f, steps, method)(params, x, t, baseline=baseline)
    exact = fattr.integrated_gradients(f, steps, method, complete=True)(params, x, t,
                                                                        baseline=baseline)
    assert fattr.completeness_gap(f, params, x, plain, t, baseline=baseline).abs().max() > 1e-4
    gap = fattr.completeness_gap(f, params, x, exact, t, baseline=baseline)
    assert gap.abs().max() < 1e-12


def test_complete_ig_is_closer_to_the_converged_integral(cnn):
    f, params, x, t = cnn
    reference = fattr.integrated_gradients(f, steps=400)(params, x, t)
    error = lambda a: ((a - reference).flatten(1).norm(dim=1) / reference.flatten(1).norm(dim=1))
    plain = fattr.integrated_gradients(f, steps=8)(params, x, t)
    exact = fattr.integrated_gradients(f, steps=8, complete=True)(params, x, t)
    assert error(exact).mean() < error(plain).mean()


def test_complete_ig_does_not_depend_on_batch_size(cnn):
    f, params, x, t = cnn
    whole = fattr.integrated_gradients(f, steps=6, complete=True)(params, x, t)
    chunked = fattr.integrated_gradients(f, steps=6, complete=True, batch_size=4)(params, x, t)
    torch.testing.assert_close(chunked, whole, rtol=1e-12, atol=1e-14)


def test_complete_ig_under_vmap_over_targets_and_per_example(cnn):
    f, params, x, _ = cnn
    targets = torch.tensor([[0, 1, 2, 3, 0], [3, 3, 1, 0, 2]])
    attr = fattr.integrated_gradients(f, steps=6, complete=True)
    mapped = torch.func.vmap(attr, in_dims=(None, None, 0))(params, x, targets)
    for k in range(2):
        torch.testing.assert_close(mapped[k], attr(params, x, targets[k]), rtol=1e-12,
                                   atol=1e-14)
    per_example = fattr.integrated_gradients(fattr.per_example(f), steps=6, complete=True)
    one_by_one = torch.func.vmap(per_example, in_dims=(None, 0, 0))(params, x, targets[1])
    torch.testing.assert_close(one_by_one, mapped[1], rtol=1e-10, atol=1e-12)


def test_complete_ig_of_a_tuple_input_and_a_linear_model():
    """A linear model: plain IG is already complete, so the correction changes nothing; the
    correction spans both inputs of a tuple."""
    weight = torch.randn(3, 4, dtype=torch.float64)
    linear = lambda params, x: x[0] @ weight.T + x[1] @ weight.T ** 2
    xs = (torch.randn(2, 4, dtype=torch.float64), torch.randn(2, 4, dtype=torch.float64))
    plain = fattr.integrated_gradients(linear, steps=3)({}, xs, 1)
    exact = fattr.integrated_gradients(linear, steps=3, complete=True)({}, xs, 1)
    for p, e in zip(plain, exact):
        torch.testing.assert_close(e, p, rtol=1e-12, atol=1e-14)
    quadratic = lambda params, x: (x[0] ** 2) @ weight.T + x[1] @ weight.T
    exact = fattr.integrated_gradients(quadratic, steps=1, method="riemann_left",
                                       complete=True)({}, xs, 2)
    total = quadratic({}, xs)[:, 2]
    torch.testing.assert_close(exact[0].sum(1) + exact[1].sum(1), total, rtol=1e-12,
                               atol=1e-14)


def test_complete_ig_is_differentiable_in_the_params(cnn):
    f, params, x, t = cnn
    attr = fattr.integrated_gradients(f, steps=4, complete=True)
    weights = fattr.trainable(f, params)
    grads = torch.func.grad(lambda w: attr({**params, **w}, x, t).square().sum())(weights)
    assert all(torch.isfinite(g).all() for g in grads.values())
    assert any(g.abs().sum() > 0 for g in grads.values())


def test_complete_must_be_a_bool():
    with pytest.raises(fattr.FattrTypeError, match="integrated_gradients: complete must be"):
        fattr.integrated_gradients(lambda p, x: x, complete="yes")
