"""layer_deeplift and layer_feature_ablation: captum parity (float64, a small CNN with BatchNorm
and torchvision resnet18), DeepLIFT's summation to delta at a layer, composition and
reliability."""

from __future__ import annotations

from collections import OrderedDict

import captum.attr as ca
import pytest
import torch
from torch import nn
from torch.func import vmap

import fattr
from tests.conftest import (
    assert_unchanged,
    directional_derivative,
    forward_calls,
    mlp,
    resnet18,
    small_cnn,
    state_snapshot,
)
from tests.rules.captum_reference import accumulating_max_pool, captum_friendly

TOL = dict(rtol=1e-10, atol=1e-12)
TARGET = torch.tensor([0, 3, 1])


def seeded(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


@pytest.fixture
def cnn():
    net = small_cnn()
    f, params = fattr.functional(net)
    x = torch.randn(3, 1, 8, 8, dtype=torch.float64, generator=seeded(1))
    return net, f, params, x, 0.2 * torch.randn(x.shape, dtype=torch.float64, generator=seeded(2))


def module(net: nn.Module, name: str) -> nn.Module:
    return dict(net.named_modules())[name]


def output_change(f, params, x, base, target) -> torch.Tensor:
    rows = torch.arange(x.shape[0])
    return f(params, x)[rows, target] - f(params, base)[rows, target]


# ---- layer_deeplift ---------------------------------------------------------------------------

# small_cnn: 0 conv, 1 BatchNorm, 2 in-place ReLU, 3 MaxPool, 4 conv, 5 ReLU, 6 avg pool,
# 7 Flatten, 8 Linear. Every one of them cuts the graph, so each sums to the output change.
@pytest.mark.parametrize("layer", ["0", "1", "2", "3", "4", "5", "7"])
def test_layer_deeplift_captum_parity_and_summation_to_delta(cnn, layer):
    net, f, params, x, base = cnn
    ours = fattr.layer_deeplift(f, layer)(params, x, TARGET, baseline=base)
    # captum on the same function with a clone after every ReLU (its ReLU-then-MaxPool bug, see
    # tests/rules/captum_reference.py)
    friendly = captum_friendly(net)
    theirs = ca.LayerDeepLift(friendly, module(friendly, layer)).attribute(x, base, target=TARGET)
    assert ours.shape == theirs.shape and ours.abs().max() > 1e-3
    torch.testing.assert_close(ours, theirs, **TOL)
    gap = ours.flatten(1).sum(1) - output_change(f, params, x, base, TARGET)
    assert gap.abs().max() < 1e-13


def test_layer_deeplift_captum_bug_relu_into_max_pool(cnn):
    """captum gives the layers before the ReLU -> MaxPool pair the wrong multipliers (they no
    longer sum to the output change); fattr stays complete there."""
    net, f, params, x, base = cnn
    theirs = ca.LayerDeepLift(net, net[0]).attribute(x, base, target=TARGET)
    change = output_change(f, params, x, base, TARGET)
    assert (theirs.flatten(1).sum(1) - change).abs().max() > 1e-4
    ours = fattr.layer_deeplift(f, net[0])(params, x, TARGET, baseline=base)
    assert (ours.flatten(1).sum(1) - change).abs().max() < 1e-13


def test_layer_deeplift_summation_to_delta_on_relu_mlp():
    net = mlp(seed=3, d_in=6, hidden=16)
    f, params = fattr.functional(net)
    x = torch.randn(8, 6, dtype=torch.float64, generator=seeded(3))
    base = torch.randn(8, 6, dtype=torch.float64, generator=seeded(4))
    target = torch.tensor([0, 1, 2, 0, 1, 2, 2, 1])
    change = output_change(f, params, x, base, target)
    for layer in ["0", "1", "2", "3"]:
        a = fattr.layer_deeplift(f, layer)(params, x, target, baseline=base)
        assert (a.sum(1) - change).abs().max() < 1e-13
    # after the last nonlinearity the multipliers are the head's weights
    a = fattr.layer_deeplift(f, "3")(params, x, target, baseline=base)
    torch.testing.assert_close(a, (net[:4](x) - net[:4](base)) * net[4].weight[target], **TOL)


@pytest.fixture(scope="module")
def resnet() -> nn.Module:
    return resnet18().double()


@pytest.mark.parametrize("layer", ["maxpool", "layer3"])
def test_layer_deeplift_resnet18_captum_parity(resnet, layer):
    net = resnet
    x = torch.randn(2, 3, 32, 32, dtype=torch.float64, generator=seeded(5))
    base = 0.1 * torch.randn(x.shape, dtype=torch.float64, generator=seeded(6))
    target = torch.tensor([3, 7])
    f, params = fattr.functional(net)
    ours = fattr.layer_deeplift(f, layer)(params, x, target, baseline=base)
    friendly = captum_friendly(net)  # no ReLU module used twice (captum issue 1082)
    with accumulating_max_pool():    # overlapping stem max-pool windows add up
        theirs = ca.LayerDeepLift(friendly, module(friendly, layer)).attribute(x, base,
                                                                              target=target)
    assert ours.abs().max() > 1e-3
    torch.testing.assert_close(ours, theirs, **TOL)
    gap = ours.flatten(1).sum(1) - output_change(f, params, x, base, target)
    assert gap.abs().max() < 1e-12


def token_net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(OrderedDict(emb=nn.Embedding(20, 4), flat=nn.Flatten(),
                                     hidden=nn.Linear(20, 8), act=nn.ReLU(),
                                     out=nn.Linear(8, 3))).double().eval()


def test_token_ids_at_an_embedding():
    net = token_net()
    f, params = fattr.functional(net)
    ids = torch.randint(1, 20, (4, 5), generator=seeded(7))
    pads = torch.zeros_like(ids)
    ours = fattr.layer_deeplift(f, "emb")(params, ids, 2, baseline=pads)
    torch.testing.assert_close(ours, ca.LayerDeepLift(net, net.emb).attribute(ids, pads, target=2),
                               **TOL)
    assert (ours.flatten(1).sum(1) - output_change(f, params, ids, pads, 2)).abs().max() < 1e-13
    words = torch.arange(5).reshape(1, 5, 1)
    ablated = fattr.layer_feature_ablation(f, "emb")(params, ids, 2, layer_mask=words)
    theirs = ca.LayerFeatureAblation(net, net.emb).attribute(ids, target=2, layer_mask=words)
    assert ablated.dtype == torch.float64 and ablated.abs().max() > 1e-3
    torch.testing.assert_close(ablated, theirs, **TOL)


# ---- layer_feature_ablation -------------------------------------------------------------------

@pytest.mark.parametrize("layer", ["2", "4", "6"])
def test_layer_feature_ablation_captum_parity(cnn, layer):
    net, f, params, x, _ = cnn
    lfa = fattr.layer_feature_ablation(f, layer, batch_size=7)
    captum_lfa = ca.LayerFeatureAblation(net, module(net, layer))
    shape = net[:int(layer) + 1](x).shape
    if layer != "2":  # every neuron its own group (captum: one forward per neuron)
        ours = lfa(params, x, TARGET)
        assert ours.shape == shape and ours.abs().max() > 1e-3
        torch.testing.assert_close(ours, captum_lfa.attribute(x, target=TARGET), **TOL)
    channels = torch.tensor([0, 0, 1, 2, 1, 5][:shape[1]]).reshape(1, -1, 1, 1)
    baseline = torch.randn((1, *shape[1:]), dtype=torch.float64, generator=seeded(8))
    ours = lfa(params, x, TARGET, layer_mask=channels, baseline=baseline)
    assert ours.abs().max() > 1e-3
    theirs = captum_lfa.attribute(x, target=TARGET, layer_mask=channels,
                                  layer_baselines=baseline)
    torch.testing.assert_close(ours, theirs, **TOL)
    # one mask per example over positions, a scalar baseline
    rows = torch.randint(0, 3, (3, 1, *shape[2:]), generator=seeded(9))
    torch.testing.assert_close(lfa(params, x, 2, layer_mask=rows, baseline=0.4),
                               captum_lfa.attribute(x, target=2, layer_mask=rows,
                                                    layer_baselines=0.4), **TOL)


def test_layer_feature_ablation_resnet18_captum_parity(resnet):
    net = resnet
    before = state_snapshot(net)
    f, params = fattr.functional(net)
    x = torch.randn(2, 3, 32, 32, dtype=torch.float64, generator=seeded(10))
    groups = (torch.arange(256) // 16).reshape(1, 256, 1, 1)  # 16 groups of layer3's channels
    ours = fattr.layer_feature_ablation(f, "layer3", batch_size=16)(params, x, 4,
                                                                     layer_mask=groups)
    # captum's per-example targets fail with perturbations_per_eval > 1 in layer mode: int target
    theirs = ca.LayerFeatureAblation(net, net.layer3).attribute(x, target=4, layer_mask=groups,
                                                                perturbations_per_eval=8)
    assert ours.shape == (2, 256, 2, 2) and ours.abs().max() > 1e-3
    torch.testing.assert_close(ours, theirs, **TOL)
    assert_unchanged(net, before)


def test_layer_feature_ablation_definition(cnn):
    """Each group's value is f(x) - f(x with that group of the layer output at the baseline)."""
    net, f, params, x, _ = cnn
    mask = torch.randint(0, 4, (1, 6, 4, 4), generator=seeded(11))
    ours = fattr.layer_feature_ablation(f, "4")(params, x, TARGET, layer_mask=mask,
                                                baseline=-0.5)
    a = net[:5](x)
    full = net[5:](a)[torch.arange(3), TARGET]
    for g in range(4):
        ablated = net[5:](torch.where(mask == g, -0.5, a))[torch.arange(3), TARGET]
        expected = (full - ablated).reshape(3, 1, 1, 1).expand(3, 6, 4, 4)
        torch.testing.assert_close(ours[:, mask[0] == g], expected[:, mask[0] == g], **TOL)


def test_layer_feature_ablation_replays_the_layer_instead_of_computing_it(cnn):
    """The ablated passes run a rewritten copy whose layer returns the recorded, edited output:
    the user's layer runs in the shape probe, the 2 chunks scoring the 3 plain inputs and the
    reading pass only, not in the 144 chunks of ablations (96 neurons x 3 examples / 2)."""
    net, f, params, x, _ = cnn
    ablation = fattr.layer_feature_ablation(f, "4", batch_size=2)
    assert forward_calls(net[4], lambda: ablation(params, x, TARGET)) == 4


def test_batch_size_invariance(cnn):
    _, f, params, x, _ = cnn
    mask = torch.randint(0, 7, (3, 6, 1, 4), generator=seeded(14))  # 7 groups per example

    def lfa(batch_size):
        return fattr.layer_feature_ablation(f, "4", batch_size=batch_size)(
            params, x, TARGET, layer_mask=mask, baseline=0.3)

    reference = lfa(None)
    assert reference.abs().max() > 1e-3
    for b in (1, 5, 64):
        torch.testing.assert_close(lfa(b), reference, **TOL)


# ---- composition ------------------------------------------------------------------------------

METHODS = {
    "layer_deeplift": lambda f: fattr.layer_deeplift(f, "4"),
    "layer_feature_ablation": lambda f: fattr.layer_feature_ablation(f, "4", batch_size=32),
}


def case(cnn, name):
    """(f, params, x, make, baseline): the method's constructor and a per-example baseline (an
    input for layer_deeplift, a layer output for layer_feature_ablation)."""
    _, f, params, x, base = cnn
    if name == "layer_feature_ablation":
        base = 0.5 * torch.randn(3, 6, 4, 4, dtype=torch.float64, generator=seeded(15))
    return f, params, x, METHODS[name], base


@pytest.mark.parametrize("name", METHODS)
def test_vmap_over_targets_and_per_example(cnn, name):
    f, params, x, make, base = case(cnn, name)
    attr = make(f)
    targets = torch.tensor([[0, 3, 1], [2, 2, 0]])
    mapped = vmap(lambda t: attr(params, x, t, baseline=base))(targets)
    loop = torch.stack([attr(params, x, t, baseline=base) for t in targets])
    assert mapped.shape == (2, 3, 6, 4, 4) and loop.abs().max() > 1e-3
    torch.testing.assert_close(mapped, loop, **TOL)
    one = make(fattr.per_example(f))
    per = vmap(lambda xi, ti, bi: one(params, xi, ti, baseline=bi))(x, TARGET, base)
    torch.testing.assert_close(per, attr(params, x, TARGET, baseline=base), **TOL)


@pytest.mark.parametrize("name", METHODS)
def test_gradient_wrt_params_matches_finite_differences(cnn, name):
    f, params, x, make, base = case(cnn, name)
    attr = make(f)
    weights = torch.randn(3, 6, 4, 4, dtype=torch.float64, generator=seeded(12))
    trained = {k: v for k, v in params.items() if k.endswith(("weight", "bias"))}

    def loss(trained):
        return (attr({**params, **trained}, x, TARGET, baseline=base) * weights).sum()

    analytic, numeric, _ = directional_derivative(loss, trained)
    assert analytic.abs() > 1e-3
    torch.testing.assert_close(analytic, numeric, rtol=1e-5, atol=1e-8)


def test_plain_calls_record_no_graph(cnn):
    _, f, params, x, base = cnn
    assert not fattr.layer_deeplift(f, "4")(params, x, 0, baseline=base).requires_grad
    w = params["0.weight"].clone().requires_grad_()
    assert fattr.layer_deeplift(f, "4")({**params, "0.weight": w}, x, 0).requires_grad


# ---- reliability ------------------------------------------------------------------------------

def test_reliability(cnn):
    net, f, params, x, _ = cnn
    before = state_snapshot(net)
    with pytest.raises(ValueError, match="layer_deeplift: the model Sequential has no layer "
                                         "named '44'. Did you mean '4'"):
        fattr.layer_deeplift(f, "44")
    with pytest.raises(ValueError, match="layer_feature_ablation: the model Sequential has no "
                                         "layer named 'conv'"):
        fattr.layer_feature_ablation(f, "conv")
    with pytest.raises(ValueError, match="layer_deeplift: eps must be a positive number"):
        fattr.layer_deeplift(f, "4", eps=0.0)
    with pytest.raises(ValueError, match="layer_feature_ablation: batch_size must be a positive"):
        fattr.layer_feature_ablation(f, "4", batch_size=0)
    with pytest.raises(TypeError, match="layer_deeplift: this method needs the module tree"):
        fattr.layer_deeplift(lambda p, v: v.sum(1), "4")
    with pytest.raises(TypeError, match="layer_feature_ablation: this method needs the module"):
        fattr.layer_feature_ablation(lambda p, v: v.sum(1), "4")
    with pytest.raises(ValueError, match=r"layer_deeplift: baseline of shape \(2, 8\) does not "
                                         r"broadcast to x of shape \(3, 1, 8, 8\)"):
        fattr.layer_deeplift(f, "4")(params, x, 0, baseline=torch.zeros(2, 8))
    lfa = fattr.layer_feature_ablation(f, "4")
    with pytest.raises(ValueError, match=r"layer_feature_ablation: baseline of shape \(1, 8, 8\) "
                                         r"does not broadcast to the output of layer '4', of "
                                         r"shape \(3, 6, 4, 4\)"):
        lfa(params, x, 0, baseline=torch.zeros(1, 8, 8))
    with pytest.raises(ValueError, match=r"layer_feature_ablation: layer_mask of shape "
                                         r"\(1, 1, 8, 8\) does not broadcast to the output of "
                                         r"layer '4'"):
        lfa(params, x, 0, layer_mask=torch.zeros(1, 1, 8, 8, dtype=torch.long))
    with pytest.raises(ValueError, match="layer_mask must be an integer tensor of group ids.*"
                                         "got torch.float32"):
        lfa(params, x, 0, layer_mask=torch.zeros(1, 6, 1, 1))
    with pytest.raises(TypeError, match="unexpected argument feature_mask="):
        lfa(params, x, 0, feature_mask=torch.zeros(1, 6, 1, 1, dtype=torch.long))
    with pytest.raises(ValueError, match="layer_feature_ablation: target 9 is out of range"):
        lfa(params, x, 9)
    with pytest.raises(ValueError, match="layer_deeplift: target 9 is out of range"):
        fattr.layer_deeplift(f, "4")(params, x, 9)

    def failing(out):
        raise RuntimeError("target failed")

    for attr in (fattr.layer_deeplift(f, "4"), lfa):  # raises inside the hooked forward
        with pytest.raises(RuntimeError, match="target failed"):
            attr(params, x, failing)
    net[1].train()
    with pytest.raises(ValueError, match="layer_deeplift: '1' \\(BatchNorm2d\\) is in training"):
        fattr.layer_deeplift(f, "4")(params, x, 0)
    net[1].eval()
    assert_unchanged(net, before)
    for attr in (fattr.layer_deeplift(f, "4"), lfa):
        assert attr(params, x[:0], 0).shape == (0, 6, 4, 4)
    assert_unchanged(net, before)


def test_model_unchanged_after_calls_on_every_kind_of_layer(cnn):
    net, f, params, x, base = cnn
    before = state_snapshot(net)
    for layer in ("2", net[3], "4"):
        fattr.layer_deeplift(f, layer)(params, x, TARGET, baseline=base)
        fattr.layer_feature_ablation(f, layer)(params, x, TARGET, layer_mask=torch.zeros(
            1, 1, 1, 1, dtype=torch.long))
    assert_unchanged(net, before)


def _rows_through(module: nn.Module, fn) -> int:
    seen = []
    handle = module.register_forward_hook(lambda _, args, __: seen.append(args[0].shape[0]))
    try:
        fn()
    finally:
        handle.remove()
    return sum(seen)


def test_layer_feature_ablation_runs_the_layers_before_once_per_example_and_chunk(
        cnn, monkeypatch):
    """In a plain call the layers before the tapped one run on one row per example and chunk
    (the ablated rows join at the replayed layer); the numbers equal the general path's."""
    import importlib

    net, f, params, x, _ = cnn
    ablation = fattr.layer_feature_ablation(f, "4", batch_size=32)
    run = lambda: ablation(params, x, TARGET)
    fast, fast_rows = run(), _rows_through(net[0], run)
    monkeypatch.setattr(importlib.import_module("fattr.layers.edits"), "_prefix_once",
                        lambda *args: None)
    general, general_rows = run(), _rows_through(net[0], run)
    torch.testing.assert_close(fast, general, rtol=1e-10, atol=1e-12)
    # 3 examples x 96 neurons = 288 ablated rows; the fast path: 3 examples x 3 chunks of one
    # row each, and one row for the check (the scoring and reading passes are the same)
    assert general_rows - fast_rows == 288 - (9 + 1), (general_rows, fast_rows)
