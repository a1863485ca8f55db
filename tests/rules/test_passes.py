"""The rule-step mechanism shared by activation rules and LRP (`fattr.rules.passes`): where the
rule applies, where the true derivative does, and where the rule records no graph."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch._C._functorch as functorch
from torch.func import grad, vmap

from fattr.rules.passes import rule_level, rule_step

X = torch.tensor([0.5, -1.25, 2.0], dtype=torch.float64)
W = torch.tensor(1.5, dtype=torch.float64)


@dataclass(eq=False)
class Cube:
    """y = x^3 with the rule dx = g * x (the true derivative is 3 x^2 g); records what the rule
    sees: the functorch level of g and whether grad mode is on."""

    method: str = "cube"
    keeps_output: bool = True
    seen: list = field(default_factory=list)

    def op(self, x):
        return x ** 3

    def rule_backward(self, g, x, y, tensors):
        self.seen.append((functorch.maybe_get_level(g), torch.is_grad_enabled()))
        return g * x


def inner_gradient(step, w, x):
    """d/dx sum(step(w x)^2) by the rule: g = 2 y at the step, r = 2 (w x)^3 (w x) w."""
    return grad(lambda v: rule_step(w * v, step).pow(2).sum())(x)


def test_the_rule_applies_in_the_gradient_that_asks_for_it():
    torch.testing.assert_close(inner_gradient(Cube(), W, X), 2 * W ** 5 * X ** 4)


def test_plain_autograd_gets_the_rule():
    x = X.clone().requires_grad_()
    (g,) = torch.autograd.grad(rule_step(x, Cube()).pow(2).sum(), x)
    torch.testing.assert_close(g, 2 * X ** 4)


def test_outer_derivatives_see_the_true_derivative_of_the_forward():
    """sum r(w) = sum 2 w^5 x^4, so d/dw = sum 10 w^4 x^4: the outer level differentiates y
    = (w x)^3 by its true derivative (the rule's slope x would give sum 4 w^4 x^4 + ...)."""
    expected = (10 * W ** 4 * X ** 4).sum()
    torch.testing.assert_close(grad(lambda w: inner_gradient(Cube(), w, X).sum())(W), expected)
    w = W.clone().requires_grad_()
    (by_autograd,) = torch.autograd.grad(inner_gradient(Cube(), w, X).sum(), w)
    torch.testing.assert_close(by_autograd, expected)
    # a second-order derivative w.r.t. x as well: d/dx sum 2 w^5 x^4 = 8 w^5 x^3
    torch.testing.assert_close(grad(lambda x: inner_gradient(Cube(), W, x).sum())(X),
                               8 * W ** 5 * X ** 3)


def test_the_rule_records_no_graph_at_its_level():
    """At the rule level the rule sees tensors unwrapped from that level, with or without an
    outer transform (which still differentiates it, see above)."""
    levels = []

    def asks(step, w, x):
        def score(v):
            levels.append(rule_level())
            return rule_step(w * v, step).pow(2).sum()
        return grad(score)(x)

    plain, outer = Cube(), Cube()
    asks(plain, W, X)
    grad(lambda w: asks(outer, w, X).sum())(W)
    assert len(plain.seen) == 1 and len(outer.seen) == 1
    assert plain.seen[0][0] < levels[0] and outer.seen[0][0] < levels[1]


def test_inside_a_vmap_above_the_rule_level_the_graph_is_kept_only_if_needed():
    """A per-example model's vmap runs inside the grad: the rule runs without a graph when
    nothing below can differentiate it, with one under an outer grad (and is then right)."""
    def per_example(step, w, x):
        return grad(lambda v: vmap(lambda vi: rule_step(w * vi, step).pow(2).sum())(v).sum())(x)

    untracked, tracked = Cube(), Cube()
    torch.testing.assert_close(per_example(untracked, W, X), 2 * W ** 5 * X ** 4)
    assert untracked.seen and not any(enabled for _, enabled in untracked.seen)
    outer = grad(lambda w: per_example(tracked, w, X).sum())(W)
    assert tracked.seen and all(enabled for _, enabled in tracked.seen)
    torch.testing.assert_close(outer, (10 * W ** 4 * X ** 4).sum())


def test_vmap_outside_the_rule_level_batches_the_rule():
    xs = torch.stack([X, 2 * X])
    torch.testing.assert_close(vmap(lambda x: inner_gradient(Cube(), W, x))(xs),
                               2 * W ** 5 * xs ** 4)
    outer = grad(lambda w: vmap(lambda x: inner_gradient(Cube(), w, x))(xs).sum())(W)
    torch.testing.assert_close(outer, (10 * W ** 4 * xs ** 4).sum())
