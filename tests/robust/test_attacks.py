"""FGSM and PGD against captum (same cross-entropy loss), L2 PGD against a direct loop of
Madry et al.'s steps, random starts, masks, per-example sizes and differentiability."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from captum.robust import FGSM, PGD
from torch import nn

import fattr
from fattr.run.digits import digits_cnn, trained_digits_cnn
from tests.conftest import directional_derivative, one_thread


def cross_entropy(out, target):
    return F.cross_entropy(out, target, reduction="none")


@pytest.fixture(scope="module")
def digits():
    """A trained digits CNN in float64 and 16 test digits in [0, 1]."""
    with one_thread():
        model, (_, _, x_test, y_test) = trained_digits_cnn(seed=0, epochs=8)
    model = model.double().eval()
    f, params = fattr.functional(model)
    return model, f, params, x_test[:16].double(), y_test[:16]


def input_gradient(model, x, y):
    x = x.clone().requires_grad_()
    (g,) = torch.autograd.grad(cross_entropy(model(x), y).sum(), x)
    return g


@pytest.fixture(scope="module")
def untrained():
    """The digits CNN at random weights (float64): no tiny input gradients, see below."""
    torch.manual_seed(0)
    model = digits_cnn().double().eval()
    f, params = fattr.functional(model)
    x = torch.rand(16, 1, 8, 8, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    return model, f, params, x, torch.arange(16) % 10


@pytest.mark.parametrize("targeted", [False, True])
def test_fgsm_equals_captum(digits, targeted):
    """Equal everywhere except where 0 < |gradient| <= 1e-6: captum leaves those elements
    (its zero_thresh), fattr steps by sign(gradient) as FGSM's formula says. A trained model
    is confident on most digits, so such tiny gradients occur here."""
    model, f, params, x, y = digits
    target = (y + 1) % 10 if targeted else y
    g = input_gradient(model, x, target)
    tiny = (g.abs() <= 1e-6) & (g != 0)
    mask = (torch.rand(x.shape, generator=torch.Generator().manual_seed(0)) > 0.3).double()
    for m in (None, mask):
        ours = fattr.robust.fgsm(f, 0.15, targeted=targeted, bounds=(0.0, 1.0))(
            params, x, target, mask=m)
        theirs = FGSM(model, cross_entropy, 0.0, 1.0).perturb(x, 0.15, target,
                                                              targeted=targeted, mask=m)
        torch.testing.assert_close(ours[~tiny], theirs[~tiny], rtol=0, atol=1e-12)
        assert torch.equal(theirs[tiny], x[tiny])  # captum leaves them: copies of x
        step = (-1 if targeted else 1) * 0.15 * torch.sign(g) * (1 if m is None else m)
        torch.testing.assert_close(ours[tiny], (x + step).clamp(0, 1)[tiny], rtol=0, atol=0)
        assert not torch.equal(ours, x)
        captums = fattr.robust.fgsm(f, 0.15, targeted=targeted, bounds=(0.0, 1.0),
                                    zero_threshold=1e-6)(params, x, target, mask=m)
        torch.testing.assert_close(captums, theirs, rtol=0, atol=1e-12)
    assert tiny.any() or targeted


@pytest.mark.parametrize("targeted", [False, True])
def test_linf_pgd_equals_captum(untrained, targeted):
    model, f, params, x, y = untrained
    target = (y + 3) % 10 if targeted else y
    attack = fattr.robust.pgd(f, 0.2, 0.04, 8, targeted=targeted, bounds=(0.0, 1.0),
                              zero_threshold=1e-6)  # captum's zero_thresh
    ours = attack(params, x, target)
    theirs = PGD(model, cross_entropy, 0.0, 1.0).perturb(x, 0.2, 0.04, 8, target,
                                                         targeted=targeted)
    torch.testing.assert_close(ours, theirs, rtol=0, atol=1e-12)
    assert (ours - x).abs().max() <= 0.2 + 1e-12
    before = cross_entropy(f(params, x), target).mean()
    after = cross_entropy(f(params, ours), target).mean()
    assert after < before if targeted else after > before  # the attack works


def test_linf_pgd_with_random_start_and_mask_equals_captum(untrained):
    model, f, params, x, y = untrained
    mask = (torch.rand(x.shape, generator=torch.Generator().manual_seed(1)) > 0.5).double()
    ours = fattr.robust.pgd(f, 0.1, 0.03, 5, random_start=True, bounds=(0.0, 1.0),
                            zero_threshold=1e-6)(
        params, x, y, torch.Generator().manual_seed(7), mask=mask)
    torch.manual_seed(7)  # captum draws its start from the global generator
    theirs = PGD(model, cross_entropy, 0.0, 1.0).perturb(x, 0.1, 0.03, 5, y,
                                                         random_start=True, mask=mask)
    torch.testing.assert_close(ours, theirs, rtol=0, atol=1e-12)
    assert torch.equal(ours[mask == 0], x[mask == 0])


def test_l2_pgd_is_madrys_normalized_steps_and_projection(digits):
    model, f, params, x, y = digits
    radius, alpha, steps = 0.8, 0.25, 6
    adv = x.clone()
    for _ in range(steps):  # the definition, written out
        g = input_gradient(model, adv, y)
        adv = adv + alpha * g / g.flatten(1).norm(dim=1)[:, None, None, None]
        delta = adv - x
        norm = delta.flatten(1).norm(dim=1)[:, None, None, None]
        adv = (x + delta * torch.clamp(radius / norm, max=1.0)).clamp(0.0, 1.0)
    ours = fattr.robust.pgd(f, radius, alpha, steps, norm="L2", bounds=(0.0, 1.0))(params, x, y)
    torch.testing.assert_close(ours, adv, rtol=0, atol=1e-12)
    assert ((ours - x).flatten(1).norm(dim=1) <= radius + 1e-9).all()
    theirs = PGD(model, cross_entropy, 0.0, 1.0).perturb(x, radius, alpha, steps, y, norm="L2")
    assert not torch.allclose(ours, theirs)  # captum's "L2" takes signed steps


def test_l2_random_start_is_uniform_in_the_ball():
    def f(params, x):
        return x @ params["w"]

    params = {"w": torch.zeros(10, 3, dtype=torch.float64)}
    x = torch.zeros(4000, 10, dtype=torch.float64)
    start = fattr.robust.pgd(f, 0.5, 0.1, 0, norm="L2", random_start=True)(
        params, x, 0, torch.Generator().manual_seed(0))
    norms = start.norm(dim=1)
    assert (norms <= 0.5 + 1e-12).all()
    # uniform in the 10-d ball: (|d| / r)^10 is uniform on [0, 1]
    u = (norms / 0.5) ** 10
    assert abs(u.mean().item() - 0.5) < 0.02 and abs(u.var().item() - 1 / 12) < 0.01
    directions = start / norms[:, None]
    assert directions.mean(0).abs().max() < 0.05


def test_per_example_sizes_equal_separate_calls(digits):
    _, f, params, x, y = digits
    eps = torch.tensor([0.05, 0.1, 0.2, 0.3], dtype=torch.float64)
    batched = fattr.robust.pgd(f, eps, eps / 4, 3, norm="L2")(params, x[:4], y[:4])
    for i in range(4):
        one = fattr.robust.pgd(f, eps[i].item(), eps[i].item() / 4, 3, norm="L2")(
            params, x[i:i + 1], y[i:i + 1])
        torch.testing.assert_close(batched[i:i + 1], one, rtol=1e-12, atol=1e-14)
    fgsm = fattr.robust.fgsm(f, eps)(params, x[:4], y[:4])
    assert torch.allclose((fgsm - x[:4]).abs().flatten(1).amax(1), eps)


def test_attacks_are_differentiable():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(6, 8), nn.Tanh(), nn.Linear(8, 3)).double().eval()
    f, params = fattr.functional(model)
    x, y = torch.randn(5, 6, dtype=torch.float64), torch.tensor([0, 1, 2, 0, 1])
    # d FGSM(x) / dx is the identity (the sign has zero derivative), also under torch.func
    jac = torch.func.jacrev(lambda inputs: fattr.robust.fgsm(f, 0.1)(params, inputs, y))(x)
    torch.testing.assert_close(jac, torch.eye(30, dtype=torch.float64).reshape(5, 6, 5, 6))
    # L2 PGD moves along g / |g|, which depends on the parameters: a loss on the attacked
    # output has the gradient that finite differences give
    attack = fattr.robust.pgd(f, 0.5, 0.2, 3, norm="L2")

    def robust_loss(p):
        return F.cross_entropy(f(p, attack(p, x, y)), y)

    check = directional_derivative(robust_loss, dict(params))
    torch.testing.assert_close(check.analytic, check.numeric, rtol=1e-5, atol=1e-9)
    assert check.analytic.abs() > 1e-4


def test_custom_loss_and_bounds_as_tensors(digits):
    model, f, params, x, y = digits
    low, high = torch.full_like(x[:1], 0.1), torch.full_like(x[:1], 0.9)
    logit_margin = lambda out, t: -out.gather(1, t[:, None]).squeeze(1)
    ours = fattr.robust.fgsm(f, 0.5, loss=logit_margin, bounds=(low, high))(params, x, y)
    theirs = FGSM(model, logit_margin).perturb(x, 0.5, y)
    torch.testing.assert_close(ours, torch.maximum(torch.minimum(theirs, high), low))
    assert ours.min() >= 0.1 and ours.max() <= 0.9


def test_vmap_over_per_example_attacks_equals_the_batched_call(untrained):
    _, f, params, x, y = untrained
    mask = (torch.rand(x.shape, generator=torch.Generator().manual_seed(2)) > 0.5).double()
    for make in (lambda g: fattr.robust.fgsm(g, 0.1, bounds=(0.0, 1.0)),
                 lambda g: fattr.robust.pgd(g, 0.5, 0.2, 3, norm="L2")):
        batched = make(f)(params, x, y, mask=mask)
        one = make(fattr.per_example(f))
        mapped = torch.func.vmap(lambda xi, yi, mi, one=one: one(params, xi, yi, mask=mi))(
            x, y, mask)
        torch.testing.assert_close(mapped, batched, rtol=1e-10, atol=1e-12)
