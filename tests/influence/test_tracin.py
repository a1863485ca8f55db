"""TracInCP, TracInCPFast and self-influence against captum (float64), the definition by hand,
the two per-example gradient engines, projections, data forms and top_k."""

from __future__ import annotations

import pytest
import torch
from captum.influence import TracInCP, TracInCPFast
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

import fattr
from fattr.core.model import as_model
from fattr.influence.affine import affine_gradients, affine_layers
from fattr.influence.gradients import per_example_gradients
from tests.influence.models import captum_loader, digits_run, peer

LOSS = nn.CrossEntropyLoss(reduction="sum")


@pytest.fixture(scope="module")
def run():
    return digits_run()


@pytest.fixture(scope="module")
def rows(run):
    x_train, y_train, x_test, y_test = run.data
    return x_train[:150], y_train[:150], x_test[:6], y_test[:6]


def rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a - b).abs().max() / b.abs().max()).item()


def captum_tracin(run, x, y, **kwargs):
    return TracInCP(peer(run), DataLoader(TensorDataset(x, y), batch_size=32), [0, 1, 2],
                    checkpoints_load_func=captum_loader(run), loss_fn=LOSS, batch_size=32,
                    sample_wise_grads_per_batch=True, **kwargs)


def test_tracin_equals_captum_tracincp(run, rows):
    x, y, xt, yt = rows
    f, _ = fattr.functional(run.model)
    ours = fattr.influence.tracin(f, run.checkpoints, LOSS, learning_rates=run.rates,
                                  batch_size=40)(x, y, xt, yt)
    theirs = captum_tracin(run, x, y).influence((xt, yt))
    assert ours.shape == (6, 150)
    assert rel(ours, theirs) < 1e-8


def test_tracin_on_chosen_layers_equals_captum(run, rows):
    x, y, xt, yt = rows
    f, _ = fattr.functional(run.model)
    ours = fattr.influence.tracin(f, run.checkpoints, LOSS, learning_rates=run.rates,
                                  layers=["3", run.model[7]])(x, y, xt, yt)
    theirs = captum_tracin(run, x, y, layers=["3", "7"]).influence((xt, yt))
    assert rel(ours, theirs) < 1e-8


def test_self_influence_equals_captum(run, rows):
    x, y, _, _ = rows
    f, _ = fattr.functional(run.model)
    ours = fattr.influence.self_influence(f, run.checkpoints, LOSS, learning_rates=run.rates,
                                          batch_size=64)(x, y)
    theirs = captum_tracin(run, x, y).self_influence(DataLoader(TensorDataset(x, y), 32))
    assert ours.shape == (150,)
    assert rel(ours, theirs) < 1e-8


def test_fast_form_and_its_self_influence_equal_captum_tracincpfast(run, rows):
    x, y, xt, yt = rows
    f, _ = fattr.functional(run.model)
    theirs = TracInCPFast(peer(run), "7", DataLoader(TensorDataset(x, y), batch_size=32),
                          [0, 1, 2], checkpoints_load_func=captum_loader(run), loss_fn=LOSS,
                          batch_size=32)
    kwargs = {"learning_rates": run.rates, "last_layer": "7", "batch_size": 50}
    ours = fattr.influence.tracin(f, run.checkpoints, LOSS, **kwargs)(x, y, xt, yt)
    assert rel(ours, theirs.influence((xt, yt))) < 1e-8
    mine = fattr.influence.self_influence(f, run.checkpoints, LOSS, **kwargs)(x, y)
    assert rel(mine, theirs.self_influence(DataLoader(TensorDataset(x, y), 32))) < 1e-8


def test_tracin_is_the_definition_with_per_example_autograd(run, rows):
    """sum_c lr_c <grad L(test), grad L(train)>, one autograd.grad call per example."""
    x, y, xt, yt = rows[0][:12], rows[1][:12], rows[2][:3], rows[3][:3]
    f, _ = fattr.functional(run.model)

    def grad_of(params, xb, yb):
        w = {k: v.clone().requires_grad_() for k, v in params.items()
             if k in dict(run.model.named_parameters())}
        g = torch.autograd.grad(LOSS(f({**params, **w}, xb[None]), yb[None]), list(w.values()))
        return torch.cat([t.flatten() for t in g])

    expected = torch.zeros(3, 12, dtype=torch.float64)
    for params, rate in zip(run.checkpoints, run.rates):
        test = torch.stack([grad_of(params, a, b) for a, b in zip(xt, yt)])
        train = torch.stack([grad_of(params, a, b) for a, b in zip(x, y)])
        expected += rate * test @ train.T
    ours = fattr.influence.tracin(f, run.checkpoints, LOSS, learning_rates=run.rates)(x, y, xt, yt)
    assert rel(ours, expected) < 1e-10


def test_affine_engine_equals_vmap_grad_for_linear_and_conv_layers():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(2, 4, 3, stride=2, padding=1, groups=2), nn.ReLU(),
                          nn.Conv2d(4, 6, 2, dilation=2, bias=False), nn.Flatten(),
                          nn.Linear(6, 5), nn.Tanh(), nn.Linear(5, 3)).double().eval()
    f, params = fattr.functional(model)
    model_ = as_model(f, None, "tracin")
    names = list(params)
    x, y = torch.randn(7, 2, 6, 6, dtype=torch.float64), torch.randint(0, 3, (7,))
    layers = affine_layers(model_, names)
    assert layers is not None
    fast = affine_gradients(model_, LOSS, params, layers, names, x, y)
    slow = per_example_gradients(model_, LOSS, params, names, x, y)
    for name in names:
        assert fast[name].shape == (7, *params[name].shape)
        torch.testing.assert_close(fast[name], slow[name], rtol=1e-10, atol=1e-12)
    # a Linear over a token axis: the gradient is a sum of outer products over the tokens
    tokens = nn.Sequential(nn.Linear(4, 6), nn.Tanh(), nn.Flatten(), nn.Linear(18, 3))
    f, params = fattr.functional(tokens.double().eval())
    model_ = as_model(f, None, "tracin")
    x = torch.randn(5, 3, 4, dtype=torch.float64)
    layers = affine_layers(model_, list(params))
    fast = affine_gradients(model_, LOSS, params, layers, list(params), x, y[:5])
    slow = per_example_gradients(model_, LOSS, params, list(params), x, y[:5])
    for name in params:
        torch.testing.assert_close(fast[name], slow[name], rtol=1e-10, atol=1e-12)


def test_models_the_affine_engine_cannot_take_use_vmap_grad():
    """LayerNorm parameters, a reused Linear, a token axis: same scores as the definition."""
    torch.manual_seed(0)

    class Tokens(nn.Module):
        def __init__(self):
            super().__init__()
            self.norm, self.mix, self.head = nn.LayerNorm(4), nn.Linear(4, 4), nn.Linear(4, 3)

        def forward(self, x):
            h = self.mix(torch.tanh(self.mix(self.norm(x))))  # mix runs twice
            return self.head(h.mean(1))

    model = Tokens().double().eval()
    f, params = fattr.functional(model)
    names = [k for k, _ in model.named_parameters()]
    assert affine_layers(as_model(f, None, "tracin"), names) is None  # LayerNorm
    x, y = torch.randn(9, 5, 4, dtype=torch.float64), torch.randint(0, 3, (9,))
    ckpt = [dict(params)]
    scores = fattr.influence.tracin(f, ckpt, LOSS)(x, y, x[:2], y[:2])
    grads = [torch.cat([g.flatten() for g in torch.autograd.grad(
        LOSS(model(x[i:i + 1]), y[i:i + 1]), list(model.parameters()))]) for i in range(9)]
    g = torch.stack(grads)
    assert rel(scores, g[:2] @ g.T) < 1e-10
    # only the head: Linear over (B, features), the affine engine
    head = fattr.influence.tracin(f, ckpt, LOSS, layers="head")(x, y, x[:2], y[:2])
    gh = g[:, -15:]
    assert rel(head, gh[:2] @ gh.T) < 1e-10


def test_projection_keeps_the_top_proponents_on_a_trained_model():
    """TracInCP projected to 256 dims vs exact, and TracInCPFastRandProj vs TracInCPFast:
    the top-10 proponents mostly agree and the strongest one is in the projection's top 3."""
    run = digits_run(rows=1347, epochs=2)
    x_train, y_train, x_test, y_test = run.data
    x, y, xt, yt = x_train[:400], y_train[:400], x_test[:10], y_test[:10]
    f, _ = fattr.functional(run.model)
    for extra in ({}, {"last_layer": "7"}):
        def scores(extra=extra, **kwargs):
            return fattr.influence.tracin(f, run.checkpoints, LOSS, learning_rates=run.rates,
                                          **extra, **kwargs)(x, y, xt, yt)

        top = fattr.influence.top_k(scores(), 10)[1].tolist()
        projected = scores(projection_dim=256, generator=torch.Generator().manual_seed(0))
        ptop = fattr.influence.top_k(projected, 10)[1].tolist()
        overlap = [len(set(a) & set(b)) for a, b in zip(top, ptop)]
        assert sum(overlap) / len(overlap) >= 7, (extra, overlap)
        hits = sum(int(t[0] in p[:3]) for t, p in zip(top, ptop))
        assert hits >= 8, (extra, hits)
        again = scores(projection_dim=256, generator=torch.Generator().manual_seed(0))
        torch.testing.assert_close(again, projected)  # same generator state, same projection
        other = scores(projection_dim=256, generator=torch.Generator().manual_seed(1))
        assert not torch.allclose(other, projected)


def test_dataloaders_and_batch_size_give_the_same_scores(run, rows):
    x, y, xt, yt = rows[0][:70], rows[1][:70], rows[2], rows[3]
    f, _ = fattr.functional(run.model)
    tr = fattr.influence.tracin(f, run.checkpoints, LOSS, learning_rates=run.rates)
    reference = tr(x, y, xt, yt)
    chunked = fattr.influence.tracin(f, run.checkpoints, LOSS, learning_rates=run.rates,
                                     batch_size=16)
    loader = DataLoader(TensorDataset(x, y), batch_size=33)
    tests = DataLoader(TensorDataset(xt, yt), batch_size=4)
    torch.testing.assert_close(chunked(loader, None, tests, None), reference, rtol=1e-12,
                               atol=1e-15)
    si = fattr.influence.self_influence(f, run.checkpoints, LOSS, learning_rates=run.rates)
    torch.testing.assert_close(si(loader), si(x, y), rtol=1e-12, atol=0)


def test_top_k_equals_captums_proponents_and_opponents(run, rows):
    x, y, xt, yt = rows
    f, _ = fattr.functional(run.model)
    scores = fattr.influence.tracin(f, run.checkpoints, LOSS, learning_rates=run.rates)(
        x, y, xt, yt)
    peer_tracin = captum_tracin(run, x, y)
    for proponents in (True, False):
        values, indices = fattr.influence.top_k(scores, 4, proponents=proponents)
        theirs = peer_tracin.influence((xt, yt), k=4, proponents=proponents)
        assert rel(values, theirs.influence_scores) < 1e-8
        # the same rows, up to the order of scores tied within rounding
        assert torch.equal(scores.gather(1, indices), values)  # a copy: indices fit values
        assert rel(scores.gather(1, theirs.indices), values) < 1e-8
        assert values.shape == (6, 4)
        ordered = values if proponents else -values
        assert (ordered[:, :-1] >= ordered[:, 1:]).all()


def test_a_plain_function_model_and_the_users_model_is_untouched(run, rows):
    from tests.conftest import assert_unchanged, state_snapshot

    x, y, xt, yt = rows
    before = state_snapshot(run.model)
    f, _ = fattr.functional(run.model)
    fattr.influence.tracin(f, run.checkpoints, LOSS, last_layer="7")(x[:10], y[:10], xt, yt)
    fattr.influence.self_influence(f, run.checkpoints, LOSS)(x[:10], y[:10])
    assert_unchanged(run.model, before)

    def g(params, inputs):  # a model without a module: vmap(grad) over every float entry
        return inputs.flatten(1) @ params["w"]

    w = {"w": torch.randn(64, 10, dtype=torch.float64)}
    scores = fattr.influence.tracin(g, [w], LOSS)(x[:10], y[:10], xt, yt)
    grads = torch.stack([torch.autograd.grad(
        LOSS(g({"w": w["w"].requires_grad_()}, x[i:i + 1]), y[i:i + 1]), w["w"])[0].flatten()
        for i in range(10)])
    tests = torch.stack([torch.autograd.grad(
        LOSS(g({"w": w["w"]}, xt[i:i + 1]), yt[i:i + 1]), w["w"])[0].flatten()
        for i in range(6)])
    assert rel(scores, tests @ grads.T) < 1e-10
