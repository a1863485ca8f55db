"""Each rule re-derived in matrix form on a Linear layer (zennit's test pattern), float64."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import fattr
from fattr.lrp import AlphaBeta, Epsilon, Flat, Gamma, Norm, Pass, WSquare, ZBox, ZPlus

EPS = 1e-6


def stab(z: torch.Tensor, eps: float = EPS) -> torch.Tensor:
    return z + eps * torch.where(z >= 0, 1.0, -1.0).double()


def pos(t: torch.Tensor) -> torch.Tensor:
    return t.clamp(min=0)


def neg(t: torch.Tensor) -> torch.Tensor:
    return t.clamp(max=0)


def epsilon(x, w, b, r):
    return x * ((r / stab(x @ w.T + b)) @ w)


def zplus(x, w, b, r):
    g = r / stab(pos(x) @ pos(w).T + neg(x) @ neg(w).T + pos(b))
    return pos(x) * (g @ pos(w)) + neg(x) * (g @ neg(w))


def alpha_beta(x, w, b, r, alpha=2.0, beta=1.0):
    gp = r / stab(pos(x) @ pos(w).T + neg(x) @ neg(w).T + pos(b))
    gn = r / stab(pos(x) @ neg(w).T + neg(x) @ pos(w).T + neg(b))
    return (alpha * (pos(x) * (gp @ pos(w)) + neg(x) * (gp @ neg(w)))
            - beta * (pos(x) * (gn @ neg(w)) + neg(x) * (gn @ pos(w))))


def gamma(x, w, b, r, g=0.25):
    up, down = w + g * pos(w), w + g * neg(w)
    z = x @ w.T + b
    gp = (z > 0) * r / stab(pos(x) @ up.T + neg(x) @ down.T + b + g * pos(b))
    gn = (z < 0) * r / stab(pos(x) @ down.T + neg(x) @ up.T + b + g * neg(b))
    return pos(x) * (gp @ up) + neg(x) * (gp @ down) + pos(x) * (gn @ down) + neg(x) * (gn @ up)


def zbox(x, w, b, r, low=-2.0, high=3.0):
    lo, hi = torch.full_like(x, low), torch.full_like(x, high)
    g = r / stab(x @ w.T - lo @ pos(w).T - hi @ neg(w).T)
    return x * (g @ w) - lo * (g @ pos(w)) - hi * (g @ neg(w))


def flat(x, w, b, r):
    return (r / stab(torch.full_like(r, x.shape[1]))) @ torch.ones_like(w)


def wsquare(x, w, b, r):
    return (r / stab(torch.ones_like(x) @ (w * w).T + b * b)) @ (w * w)


CASES = [(Epsilon(), epsilon),
         (Epsilon(0.5), lambda x, w, b, r: x * ((r / stab(x @ w.T + b, 0.5)) @ w)),
         (ZPlus(), zplus), (AlphaBeta(), alpha_beta),
         (AlphaBeta(1.0, 0.0), lambda x, w, b, r: alpha_beta(x, w, b, r, 1.0, 0.0)),
         (Gamma(), gamma), (Gamma(1.5), lambda x, w, b, r: gamma(x, w, b, r, 1.5)),
         (ZBox(-2.0, 3.0), zbox), (Flat(), flat), (WSquare(), wsquare), (Norm(), epsilon),
         (Pass(), lambda x, w, b, r: r)]


@pytest.fixture
def layer():
    torch.manual_seed(1)
    x = torch.randn(4, 6, dtype=torch.float64)
    w = torch.randn(6, 6, dtype=torch.float64)
    b = torch.randn(6, dtype=torch.float64)
    r = torch.randn(4, 6, dtype=torch.float64)
    return x, w, b, r


def case_id(case: object) -> str:
    """Stable ids (no function addresses, which differ between xdist workers)."""
    return getattr(case, "__name__", None) or repr(case)[:40]


@pytest.mark.parametrize(("rule", "reference"), CASES, ids=case_id)
def test_rule_matches_matrix_form(layer, rule, reference):
    x, w, b, r = layer
    ours = rule.relevance(F.linear, x, {"weight": w, "bias": b}, r)
    torch.testing.assert_close(ours, reference(x, w, b, r), rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize(("rule", "reference"), CASES[:-1], ids=case_id)
def test_rule_through_lrp_starts_from_the_target_logit(layer, rule, reference):
    x, w, b, _ = layer
    net = nn.Linear(6, 6).double().eval()
    with torch.no_grad():
        net.weight.copy_(w)
        net.bias.copy_(b)
    f, params = fattr.functional(net)
    target = torch.tensor([0, 2, 5, 1])
    initial = F.one_hot(target, 6).double() * (x @ w.T + b)
    ours = fattr.lrp(f, {nn.Linear: rule})(params, x, target)
    torch.testing.assert_close(ours, reference(x, w, b, initial), rtol=1e-10, atol=1e-12)


def test_alpha_beta_conserves_on_a_bias_free_layer(layer):
    x, w, _, r = layer
    ours = AlphaBeta(3.0, 2.0, stabilizer=0.0).relevance(F.linear, x, {"weight": w}, r)
    torch.testing.assert_close(ours.sum(1), r.sum(1), rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize(("make", "match"), [
    (lambda: AlphaBeta(2.0, 2.0), "alpha - beta = 1"),
    (lambda: AlphaBeta(-1.0, -2.0), "alpha"),
    (lambda: Epsilon(-1e-3), "epsilon"),
    (lambda: Gamma(gamma=-0.1), "gamma"),
    (lambda: Norm(stabilizer=float("nan")), "stabilizer"),
    (lambda: ZBox("low", 1.0), "number or a tensor"),
    (lambda: ZPlus(stabilizer=True), "stabilizer"),
])
def test_bad_rule_parameters_raise(make, match):
    with pytest.raises(fattr.FattrError, match=match):
        make()


def test_zbox_bounds_must_broadcast():
    x = torch.randn(2, 6, dtype=torch.float64)
    rule = ZBox(torch.zeros(3), torch.ones(3))
    with pytest.raises(fattr.FattrError, match="does not broadcast"):
        rule.relevance(F.linear, x, {"weight": torch.randn(6, 6).double()}, torch.randn(2, 6))


def test_rules_are_hashable_data():
    assert Epsilon() == Epsilon(1e-6) and len({Gamma(), Gamma(0.25), Gamma(0.5)}) == 2
    assert repr(AlphaBeta()) == "AlphaBeta(alpha=2.0, beta=1.0, stabilizer=1e-06)"
