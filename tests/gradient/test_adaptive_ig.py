"""adaptive_integrated_gradients: nested trapezoid rounds, per-example refinement until the
completeness gap is within tolerance."""

import pytest
import torch
from torch import nn

import fattr


def _mlp(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(6, 16), nn.Tanh(), nn.Linear(16, 16), nn.ReLU(),
                         nn.Linear(16, 3)).double().eval()


X = torch.randn(5, 6, generator=torch.Generator().manual_seed(1), dtype=torch.float64) * 2
T = torch.tensor([0, 1, 2, 0, 1])


def test_forced_refinement_equals_the_fixed_trapezoid_rule():
    f, params = fattr.functional(_mlp())
    adaptive = fattr.adaptive_integrated_gradients(f, tolerance=1e-300, min_steps=4,
                                                   max_steps=32)(params, X, T)
    fixed = fattr.integrated_gradients(f, steps=33, method="riemann_trapezoid")(params, X, T)
    torch.testing.assert_close(adaptive, fixed, rtol=1e-12, atol=1e-14)


def test_every_example_meets_the_tolerance_and_gets_closer_to_the_integral():
    f, params = fattr.functional(_mlp())
    reference = fattr.integrated_gradients(f, steps=2000)(params, X, T)
    errors = []
    for tolerance in (1e-2, 1e-3):
        a = fattr.adaptive_integrated_gradients(f, tolerance=tolerance, max_steps=2**14)(
            params, X, T)
        rise = (f(params, X) - f(params, torch.zeros_like(X)))[torch.arange(5), T]
        gap = fattr.completeness_gap(f, params, X, a, T)
        assert (gap.abs() <= tolerance * rise.abs()).all(), (gap, rise)
        errors.append(float((a - reference).norm() / reference.norm()))
    assert errors[1] < errors[0] / 3, errors


def test_only_the_examples_above_the_tolerance_are_refined():
    net = _mlp()
    rows = []

    def counted(params, x):
        rows.append(x.shape[0])
        return torch.func.functional_call(net, params, (x,))

    params = dict(net.named_parameters())
    x = X[:2].clone()
    x[0] = 0.0  # the baseline itself: f(x) - f(x') = 0 = the attribution, done at once
    a = fattr.adaptive_integrated_gradients(counted, tolerance=1e-6, min_steps=4,
                                            max_steps=64)(params, x, T[:2])
    assert rows == [2 * 5, 4, 8, 16, 32], rows  # round 0 for both, then example 1 alone
    torch.testing.assert_close(a[0], torch.zeros(6, dtype=torch.float64), rtol=0, atol=1e-15)


def test_batch_size_does_not_change_the_result():
    f, params = fattr.functional(_mlp())
    whole = fattr.adaptive_integrated_gradients(f, tolerance=1e-4)(params, X, T)
    chunked = fattr.adaptive_integrated_gradients(f, tolerance=1e-4, batch_size=7)(params, X, T)
    torch.testing.assert_close(chunked, whole, rtol=1e-12, atol=1e-14)


def test_vmap_over_targets_masks_each_targets_rounds():
    f, params = fattr.functional(_mlp())
    attr = fattr.adaptive_integrated_gradients(f, tolerance=1e-5, max_steps=256)
    targets = torch.tensor([[0] * 5, [2] * 5])
    mapped = torch.func.vmap(lambda t: attr(params, X, t))(targets)
    for k in range(2):
        torch.testing.assert_close(mapped[k], attr(params, X, targets[k]), rtol=1e-12,
                                   atol=1e-14)


@pytest.mark.parametrize("kwargs, match", [
    ({"tolerance": 0.0}, "tolerance must be a positive number"),
    ({"tolerance": float("nan")}, "tolerance must be a positive number"),
    ({"tolerance": True}, "tolerance must be a positive number"),
    ({"min_steps": 0}, "min_steps must be a positive int"),
    ({"max_steps": 2.5}, "max_steps must be a positive int"),
    ({"min_steps": 16, "max_steps": 8}, r"max_steps \(8\) must be at least min_steps \(16\)"),
    ({"batch_size": 0}, "batch_size"),
])
def test_bad_arguments_are_named(kwargs, match):
    f, _ = fattr.functional(_mlp())
    with pytest.raises(fattr.FattrError, match=match):
        fattr.adaptive_integrated_gradients(f, **kwargs)
