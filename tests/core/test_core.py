"""Core units: quadrature rules, target forms, per_example, chunking."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from captum.attr._utils.approximation_methods import approximation_parameters
from hypothesis import given, settings
from hypothesis import strategies as st

import fattr
from fattr.core.chunking import chunked, row_slices
from fattr.core.quadrature import RULES, quadrature
from fattr.core.targets import Target
from tests.conftest import mlp

LIKE = torch.zeros((), dtype=torch.float64)


@pytest.mark.parametrize("rule", [r for r in RULES if r != "riemann_trapezoid"])
@pytest.mark.parametrize("steps", [2, 7, 50])
def test_nodes_and_weights_match_captum(rule, steps):
    alphas, weights = quadrature(rule, steps, LIKE)
    step_sizes, theirs = approximation_parameters(rule)
    # captum builds its Riemann nodes with float32 linspace: agreement to float32 precision
    np.testing.assert_allclose(alphas.numpy(), theirs(steps), rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(weights.numpy(), step_sizes(steps), rtol=1e-6)


@given(st.integers(2, 64))
@settings(max_examples=25, deadline=None)
def test_trapezoid_is_the_true_rule(steps):
    alphas, weights = quadrature("riemann_trapezoid", steps, LIKE)
    assert abs(weights.sum().item() - 1.0) < 1e-12
    assert abs((weights * alphas).sum().item() - 0.5) < 1e-12  # exact for linear integrands


@given(st.sampled_from(sorted(RULES)), st.integers(2, 40))
@settings(max_examples=40, deadline=None)
def test_every_rule_integrates_constants_exactly(rule, steps):
    _, weights = quadrature(rule, steps, LIKE)
    assert abs(weights.sum().item() - 1.0) < 1e-12


def test_target_forms_select_the_same_scores():
    out = torch.arange(2 * 3 * 4, dtype=torch.float64).reshape(2, 3, 4)
    by_tuple = Target((1, 2), 2, out.device, "t").select(out)
    by_tensor = Target(torch.tensor([[1, 2], [1, 2]]), 2, out.device, "t").select(out)
    by_callable = Target(lambda o: o[:, 1, 2], 2, out.device, "t").select(out)
    torch.testing.assert_close(by_tuple, out[:, 1, 2])
    torch.testing.assert_close(by_tensor, out[:, 1, 2])
    torch.testing.assert_close(by_callable, out[:, 1, 2])
    mixed = Target(torch.tensor([[0, 3], [2, -1]]), 2, out.device, "t").select(out)
    torch.testing.assert_close(mixed, torch.stack([out[0, 0, 3], out[1, 2, 3]]))
    scalar = torch.tensor([[5.0], [6.0]])
    torch.testing.assert_close(Target(None, 2, out.device, "t").select(scalar),
                               torch.tensor([5.0, 6.0]))
    rows = torch.tensor([1, 0, 1])
    picked = Target([0, 2], 2, out.device, "t").select(out[[1, 0, 1], :, 0], rows)
    torch.testing.assert_close(picked, torch.stack([out[1, 2, 0], out[0, 0, 0], out[1, 2, 0]]))


def test_target_list_and_multi_axis_outputs_work_in_methods():
    f = lambda p, x: torch.stack([x, 2 * x], 1)  # (B, 2, D) output
    x = torch.randn(3, 4, dtype=torch.float64)
    sal = fattr.saliency(f, abs=False)
    expected = torch.zeros_like(x).index_fill(1, torch.tensor([2]), 2.0)
    torch.testing.assert_close(sal({}, x, (1, 2)), expected)
    with pytest.raises(fattr.FattrError, match="selects shape \\(3, 4\\).*one scalar per example"):
        sal({}, x, 1)


def test_per_example_drops_the_batch_axis():
    net = mlp()
    f, params = fattr.functional(net)
    g = fattr.per_example(f)
    x = torch.randn(5, dtype=torch.float64)
    torch.testing.assert_close(g(params, x), net(x[None])[0])
    assert g.module is net and fattr.per_example(g) is g
    a = fattr.integrated_gradients(g, steps=4)(params, x, 1)
    b = fattr.integrated_gradients(f, steps=4)(params, x[None], 1)[0]
    torch.testing.assert_close(a, b)
    assert fattr.completeness_gap(g, params, x, a, 1).shape == ()


@given(st.integers(1, 50), st.one_of(st.none(), st.integers(1, 60)))
@settings(max_examples=50, deadline=None)
def test_row_slices_cover_every_row_once(n, batch_size):
    slices = row_slices(n, batch_size)
    covered = [i for s in slices for i in range(n)[s]]
    assert covered == list(range(n))
    assert all(s.stop - s.start <= (batch_size or n) for s in slices)


def test_chunked_segments_sum_rows_into_examples():
    rows = torch.arange(12.0).reshape(6, 2)
    index = torch.tensor([0, 1, 2, 0, 1, 2])
    total = chunked(lambda r, i: r * 1.0, rows, index, batch_size=4, segments=(index, 3))
    torch.testing.assert_close(total, rows[:3] + rows[3:])


def test_all_lists_exactly_the_public_names():
    import types

    public = {n for n in dir(fattr) if not n.startswith("_")
              and not isinstance(getattr(fattr, n), types.ModuleType)}
    assert set(fattr.__all__) == public | {"lrp", "metrics"}
