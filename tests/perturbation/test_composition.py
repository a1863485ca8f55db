"""Composition: batch_size, vmap over targets and examples, grad in params, token-id inputs."""

from __future__ import annotations

import pytest
import torch
from torch.func import grad, vmap

import fattr
from tests.perturbation.models import FIVE, TokenModel, image_case, seeded

DETERMINISTIC = {
    "occlusion": lambda f, bs=None: fattr.occlusion(f, (1, 3, 3), (1, 2, 2), batch_size=bs),
    "feature_ablation": lambda f, bs=None: fattr.feature_ablation(f, batch_size=bs),
    "shapley_values": lambda f, bs=None: fattr.shapley_values(f, batch_size=bs),
}
STOCHASTIC = {
    "feature_permutation": lambda f, bs=None: fattr.feature_permutation(f, batch_size=bs),
    "shapley_value_sampling": lambda f, bs=None: fattr.shapley_value_sampling(
        f, samples=3, batch_size=bs),
    "kernel_shap": lambda f, bs=None: fattr.kernel_shap(f, samples=12, batch_size=bs),
    "lime": lambda f, bs=None: fattr.lime(f, samples=12, batch_size=bs),
    "lime_input_kernel": lambda f, bs=None: fattr.lime(f, samples=12, batch_size=bs,
                                                       kernel_space="input"),
}
ALL = {**DETERMINISTIC, **STOCHASTIC}


def kwargs(name: str, baseline: torch.Tensor) -> dict:
    """The per-call arguments each method takes in these tests."""
    out = {} if name == "feature_permutation" else {"baseline": baseline}
    if name != "occlusion":
        out["feature_mask"] = FIVE
    if name in STOCHASTIC:
        out["generator"] = seeded(7)
    return out


@pytest.mark.parametrize("name", ALL)
@pytest.mark.parametrize("batch_size", [1, 4, 7])
def test_batch_size_changes_nothing(name, batch_size):
    net, x, target, baseline = image_case()
    f, params = fattr.functional(net)
    reference = ALL[name](f)(params, x, target, **kwargs(name, baseline))
    chunked = ALL[name](f, batch_size)(params, x, target, **kwargs(name, baseline))
    torch.testing.assert_close(chunked, reference, rtol=1e-12, atol=1e-13)
    assert reference.abs().sum() > 0


@pytest.mark.parametrize("name", DETERMINISTIC)
def test_vmap_over_targets(name):
    net, x, _, baseline = image_case()
    f, params = fattr.functional(net)
    attr = ALL[name](f, 5)
    targets = torch.tensor([[0, 1, 2], [3, 3, 3], [1, 0, 2]])
    mapped = vmap(lambda t: attr(params, x, t, **kwargs(name, baseline)))(targets)
    assert mapped.shape == (3, *x.shape)
    for k in range(3):
        torch.testing.assert_close(mapped[k], attr(params, x, targets[k],
                                                   **kwargs(name, baseline)),
                                   rtol=1e-12, atol=1e-13)


@pytest.mark.parametrize("name", STOCHASTIC)
def test_vmap_over_targets_stochastic(name):
    """The draws happen inside the call: with randomness="same" every target sees the same
    draws (== K calls with the same generator state); vmap's default refuses random ops."""
    net, x, _, baseline = image_case()
    f, params = fattr.functional(net)
    attr = ALL[name](f, 5)
    targets = torch.tensor([[0, 1, 2], [3, 3, 3]])
    call = lambda t: attr(params, x, t, **kwargs(name, baseline))
    mapped = vmap(call, randomness="same")(targets)
    for k in range(2):
        torch.testing.assert_close(mapped[k], call(targets[k]), rtol=1e-12, atol=1e-13)
    with pytest.raises(RuntimeError, match="randomness"):
        vmap(call)(targets)


@pytest.mark.parametrize("name", [n for n in ALL if n != "feature_permutation"])
def test_batched_equals_vmap_over_per_example(name):
    """Draws are shared by the examples of a batch, so the per-example vmap (randomness
    "same") gives the batched result."""
    net, x, target, baseline = image_case()
    f, params = fattr.functional(net)
    batched = ALL[name](f)(params, x, target, **kwargs(name, baseline))
    single = ALL[name](fattr.per_example(f))

    def one(xb, tb, bb):
        extra = kwargs(name, bb)
        return single(params, xb, tb, **extra)

    mapped = vmap(one, randomness="same")(x, target, baseline)
    torch.testing.assert_close(mapped, batched, rtol=1e-12, atol=1e-13)


@pytest.mark.parametrize("name", ["feature_ablation", "shapley_values", "kernel_shap", "lime"])
def test_per_example_masks_under_vmap_over_per_example(name):
    """Per-example feature masks mapped along with x give the batched per-example result."""
    net, x, target, baseline = image_case()
    f, params = fattr.functional(net)
    masks = torch.randint(0, 4, (3, 1, 8, 8), generator=seeded(8))
    masks[1] += 1  # ids 1..4 here, 0..3 elsewhere: 5 features in all
    draw = lambda: {"generator": seeded(7)} if name in STOCHASTIC else {}
    batched = ALL[name](f)(params, x, target, baseline=baseline[0], feature_mask=masks, **draw())
    single = ALL[name](fattr.per_example(f))
    mapped = vmap(lambda xb, tb, mb: single(params, xb, tb, baseline=baseline[0],
                                            feature_mask=mb, **draw()),
                  randomness="same")(x, target, masks)
    torch.testing.assert_close(mapped, batched, rtol=1e-12, atol=1e-13)
    if name in ("feature_ablation", "shapley_values"):  # ids absent from an example are inert
        for b in range(3):
            alone = ALL[name](f)(params, x[b:b + 1], target[b:b + 1], baseline=baseline[0],
                                 feature_mask=masks[b:b + 1])
            torch.testing.assert_close(batched[b:b + 1], alone, rtol=1e-12, atol=1e-13)


@pytest.mark.parametrize("name", ALL)
def test_grad_in_params_matches_autograd(name):
    net, x, target, baseline = image_case()
    f, params = fattr.functional(net)
    attr = ALL[name](f)

    def loss(p):
        return (attr({**params, **p}, x, target, **kwargs(name, baseline)) ** 2).sum()

    trainable = {k: params[k] for k, _ in net.named_parameters()}
    functional = grad(loss)(trainable)
    leaves = {k: v.clone().requires_grad_() for k, v in trainable.items()}
    autograd = torch.autograd.grad(loss(leaves), list(leaves.values()), allow_unused=True)
    nonzero = 0
    for k, g in zip(leaves, autograd):
        g = torch.zeros_like(leaves[k]) if g is None else g
        torch.testing.assert_close(functional[k], g, rtol=1e-10, atol=1e-12)
        nonzero += int(g.abs().sum() > 0)
    assert nonzero >= 2


@pytest.mark.parametrize("name", ["kernel_shap", "lime", "occlusion"])
def test_grad_in_params_matches_finite_differences(name):
    net, x, target, baseline = image_case()
    f, params = fattr.functional(net)
    attr = ALL[name](f)
    loss = lambda p: attr(p, x, target, **kwargs(name, baseline)).pow(2).sum()
    key, at = "8.weight", (1, 5)
    analytic = grad(lambda w: loss({**params, key: w}))(params[key])[at]
    eps = 1e-6

    def bumped(d):
        w = params[key].clone()
        w[at] += d
        return {**params, key: w}

    numeric = (loss(bumped(eps)) - loss(bumped(-eps))) / (2 * eps)
    torch.testing.assert_close(analytic, numeric, rtol=1e-5, atol=1e-9)
    assert analytic.abs() > 0


def test_result_carries_a_graph_and_follows_x():
    net, x, target, _ = image_case()
    f, params = fattr.functional(net)
    leaf = params["0.weight"].clone().requires_grad_()
    a = fattr.feature_ablation(f)(dict(params, **{"0.weight": leaf}), x, target,
                                  feature_mask=FIVE)
    (g,) = torch.autograd.grad(a.sum(), leaf)
    assert g.abs().sum() > 0
    xs = x.clone().requires_grad_()
    b = fattr.occlusion(f, (1, 4, 4), 4)(params, xs, target)
    (gx,) = torch.autograd.grad(b.sum(), xs)
    assert gx.abs().sum() > 0


@pytest.mark.parametrize("name", ["occlusion", "feature_ablation", "shapley_values",
                                  "shapley_value_sampling", "kernel_shap", "lime"])
def test_token_ids_with_a_baseline_id(name):
    """Integer inputs (token ids) work; the baseline is a token id (here 0, say [PAD])."""
    net = TokenModel().eval()
    f, params = fattr.functional(net)
    ids = torch.tensor([[3, 7, 1, 9, 2], [4, 4, 8, 5, 6]])
    attr = {"occlusion": fattr.occlusion(f, 1),
            "feature_ablation": fattr.feature_ablation(f),
            "shapley_values": fattr.shapley_values(f),
            "shapley_value_sampling": fattr.shapley_value_sampling(f, samples=4),
            "kernel_shap": fattr.kernel_shap(f, samples=30),
            "lime": fattr.lime(f, samples=30)}[name]
    extra = {"generator": seeded(1)} if name in STOCHASTIC else {}
    a = attr(params, ids, 2, baseline=0, **extra)
    assert a.shape == ids.shape and a.dtype == torch.float64 and a.abs().sum() > 0
    if name in ("occlusion", "feature_ablation"):
        with torch.no_grad():
            full = net(ids)[:, 2]
            expected = torch.stack([full - net(ids.index_fill(1, torch.tensor([i]), 0))[:, 2]
                                    for i in range(5)], 1)
        torch.testing.assert_close(a, expected, rtol=1e-12, atol=1e-13)
    if name == "shapley_values":
        with torch.no_grad():
            gap = net(ids)[:, 2] - net(torch.zeros_like(ids))[:, 2]
        torch.testing.assert_close(a.sum(1), gap, rtol=1e-12, atol=1e-13)


@pytest.mark.parametrize("name", [n for n in ALL if n != "lime_input_kernel"])
def test_empty_batch(name):
    net, x, target, baseline = image_case()
    f, params = fattr.functional(net)
    empty = x[:0]
    a = ALL[name](f)(params, empty, target[:0], **kwargs(name, baseline[:0]))
    assert a.shape == empty.shape and a.dtype == x.dtype


def test_output_selector_and_callable_target():
    net, x, _, baseline = image_case()
    f, params = fattr.functional(net)
    wrapped = lambda p, inputs: {"logits": f(p, inputs)}
    ours = fattr.shapley_values(wrapped, output=lambda o: o["logits"])(
        params, x, lambda out: out.softmax(1)[:, 2], baseline=baseline, feature_mask=FIVE)
    direct = fattr.shapley_values(lambda p, inputs: f(p, inputs).softmax(1)[:, 2])(
        params, x, None, baseline=baseline, feature_mask=FIVE)
    torch.testing.assert_close(ours, direct, rtol=1e-13, atol=1e-14)
