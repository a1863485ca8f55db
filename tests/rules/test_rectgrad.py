"""RectGrad against straightforward per-example implementations of the rule."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import fattr
from fattr.errors import FattrError
from fattr.rules.rectgrad import row_percentile
from tests.conftest import mlp, small_cnn


def matrix_rectgrad(net: nn.Sequential, x: torch.Tensor, target: int, q: float) -> torch.Tensor:
    """The rule written out for one example of a Linear-ReLU MLP, with torch.quantile."""
    linears = [m for m in net if isinstance(m, nn.Linear)]
    pre, acts = x, []
    for lin in linears[:-1]:
        pre = torch.relu(lin(pre))
        acts.append(pre)
    g = linears[-1].weight[target]
    for lin, a in zip(reversed(linears[:-1]), reversed(acts)):
        score = a * g
        g = g * (score > torch.quantile(score, q / 100, interpolation="nearest"))
        g = g @ lin.weight
    return g * x


def hooked_rectgrad(net: nn.Module, x: torch.Tensor, target: int, q: float) -> torch.Tensor:
    """The rule by autograd hooks on each ReLU output of a plain copy, one example at a time.

    The ReLU's own backward then multiplies by its mask, which changes nothing when the
    threshold is >= 0 (where a = 0, a * g = 0 is not above it); the hook checks that.
    """
    copy = nn.Sequential(*[nn.ReLU() if isinstance(m, nn.ReLU) else m for m in net])

    def relu_output(module, inputs, a):
        def rectify(g):
            score = a * g
            threshold = torch.quantile(score.flatten(), q / 100, interpolation="nearest")
            assert threshold >= 0
            return g * (score > threshold)

        a.register_hook(rectify)

    handles = [m.register_forward_hook(relu_output) for m in copy if isinstance(m, nn.ReLU)]
    try:
        rows = []
        for i in range(x.shape[0]):
            xi = x[i:i + 1].clone().requires_grad_()
            rows.append(torch.autograd.grad(copy(xi)[0, target], xi)[0] * x[i:i + 1])
    finally:
        for h in handles:
            h.remove()
    return torch.cat(rows)


@pytest.mark.parametrize("q", [0.0, 50.0, 90.0, 98.0])
def test_matches_the_matrix_form(q):
    torch.manual_seed(1)
    net = nn.Sequential(nn.Linear(6, 40), nn.ReLU(), nn.Linear(40, 30), nn.ReLU(),
                        nn.Linear(30, 3)).double().eval()
    x = torch.randn(5, 6, dtype=torch.float64)
    f, params = fattr.functional(net)
    ours = fattr.rectgrad(f, percentile=q)(params, x, 1)
    expected = torch.stack([matrix_rectgrad(net, x[i], 1, q) for i in range(5)])
    torch.testing.assert_close(ours, expected, rtol=1e-12, atol=1e-14)
    assert ours.abs().sum() > 0
    one_by_one = torch.cat([fattr.rectgrad(f, percentile=q)(params, x[i:i + 1], 1)
                            for i in range(5)])
    torch.testing.assert_close(ours, one_by_one, rtol=0, atol=0)


@pytest.mark.parametrize("mode", ["function", "hook"])
def test_matches_hooked_autograd_on_a_cnn(mode):
    net = small_cnn()
    x = torch.randn(4, 1, 8, 8, dtype=torch.float64)
    f, params = fattr.functional(net)
    ours = fattr.rectgrad(f, percentile=80.0, mode=mode)(params, x, 2)
    torch.testing.assert_close(ours, hooked_rectgrad(net, x, 2, 80.0), rtol=1e-12, atol=1e-14)


def test_rule_keeps_only_the_top_share():
    net = mlp(hidden=50)
    x = torch.randn(3, 5, dtype=torch.float64)
    f, params = fattr.functional(net)
    full = fattr.rectgrad(f, percentile=0.0)(params, x, 0)
    sparse = fattr.rectgrad(f, percentile=98.0)(params, x, 0)
    assert (sparse != 0).sum() <= (full != 0).sum()
    assert not torch.allclose(sparse, full)


@pytest.mark.parametrize("shape", [(3, 7), (2, 3, 5, 5), (4, 1)])
@pytest.mark.parametrize("q", [0.0, 12.5, 50.0, 98.0, 100.0])
def test_percentile_equals_torch_quantile(shape, q):
    v = torch.randn(shape, dtype=torch.float64)
    expected = torch.quantile(v.reshape(shape[0], -1), q / 100, dim=1, interpolation="nearest")
    got = row_percentile(v, q)
    assert got.shape == (shape[0], *([1] * (len(shape) - 1)))
    torch.testing.assert_close(got.flatten(), expected, rtol=0, atol=0)


def test_percentile_above_two_to_the_24_elements():
    """Older torch.quantile refused more than 2**24 elements; kthvalue never did."""
    v = torch.arange(2**24 + 3, dtype=torch.float32)[torch.randperm(2**24 + 3)].reshape(1, -1)
    assert row_percentile(v, 50.0).item() == (2**24 + 2) // 2


@pytest.mark.parametrize("q", [-1, 100.5, "98", True, float("nan")])
def test_bad_percentile(q):
    f, _ = fattr.functional(mlp())
    with pytest.raises(FattrError, match="rectgrad: percentile must be a number in"):
        fattr.rectgrad(f, percentile=q)
