"""timm models as a new user builds them (`timm.create_model(..., pretrained=False)`; fewer
blocks than the named models, the same block types): LRP composites on efficientnet_b0
(BatchNormAct2d, squeeze-and-excitation) and convnext_tiny (LayerNorm2d, layer scale), AttnLRP
and CP-LRP on a ViT (fused SDPA attention), DeepLIFT on all four, with resnet50."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import fattr
from fattr.lrp import CPLRP
from tests.conftest import assert_unchanged, randomize_batchnorm, state_snapshot

timm = pytest.importorskip("timm")

SMALL = {"resnet50": dict(layers=[1, 1, 1, 1]), "efficientnet_b0": {},
         "convnext_tiny": dict(depths=(1, 1, 1, 1), ls_init_value=1.0),
         "vit_tiny_patch16_224": dict(img_size=32, depth=2)}
CNNS = ["resnet50", "efficientnet_b0", "convnext_tiny"]
# float64 except efficientnet: CPU depthwise convolutions in float64 are ~6x slower
DTYPE = {name: torch.float32 if name == "efficientnet_b0" else torch.float64 for name in SMALL}
TOLERANCE = {torch.float32: 1e-5, torch.float64: 1e-12}


def model(name: str, bias: bool = True, **kwargs) -> nn.Module:
    """A timm model (in `DTYPE[name]`) with random weights, BatchNorm statistics and biases (timm
    initializes biases, the class token and positions to zero; `bias=False` keeps every bias,
    BatchNorm mean, class token and position at zero: a bias-free network)."""
    torch.manual_seed(0)
    net = timm.create_model(name, pretrained=False, num_classes=4, **{**SMALL[name], **kwargs})
    randomize_batchnorm(net)
    with torch.no_grad():
        for key, p in net.named_parameters():
            if key.endswith("bias") or key in ("cls_token", "pos_embed"):
                p.copy_(torch.randn_like(p) * 0.1 if bias else torch.zeros_like(p))
        for module in net.modules():
            if isinstance(module, nn.BatchNorm2d) and not bias:
                module.running_mean.zero_()
    return net.to(DTYPE[name]).eval()


def images(name: str, batch: int = 2, seed: int = 1) -> torch.Tensor:
    return torch.randn(batch, 3, 32, 32, generator=torch.Generator().manual_seed(seed)
                       ).to(DTYPE[name])


def relative(ours: torch.Tensor, theirs: torch.Tensor) -> float:
    return float((ours.detach() - theirs).abs().max() / theirs.abs().max())


EXACT = fattr.lrp.COMPOSITES["epsilon"](0.0, 0.0)  # LRP-0: Epsilon without stabilizers


@pytest.mark.parametrize(("name", "composite", "kwargs"), [
    ("efficientnet_b0", "epsilon_plus_flat", {}),
    ("efficientnet_b0", "epsilon_gamma_box", dict(low=-3.0, high=3.0)),
    ("convnext_tiny", "epsilon_plus_flat", {}),
    ("convnext_tiny", "epsilon_alpha2_beta1", {})])
def test_lrp_composites_run_on_timm_cnns(name, composite, kwargs):
    net = model(name)
    before = state_snapshot(net)
    f, params = fattr.functional(net)
    x = images(name, batch=1)
    r = fattr.lrp(f, composite, **kwargs)(params, x, 1)
    gxi = fattr.input_x_gradient(f)(params, x, 1)
    assert r.shape == x.shape and torch.isfinite(r).all()
    assert relative(r, gxi) > 1e-2
    assert_unchanged(net, before)


@pytest.mark.parametrize("name", CNNS)
def test_relevance_form_equals_the_single_backward_form(name):
    # LRP-0 handed down layer by layer (BatchNorm folded, BatchNormAct2d's activation kept, the
    # squeeze-and-excitation gate and the layer scale constants, LayerNorm2d's std frozen)
    # equals the same rules as one modified backward pass
    net = model(name)
    f, params = fattr.functional(net)
    x = images(name, seed=2)
    layered = fattr.lrp(f, EXACT)(params, x, 2)
    single = fattr.lrp(f, {nn.MultiheadAttention: CPLRP(0.0), **EXACT})(params, x, 2)
    assert relative(layered, single) < TOLERANCE[x.dtype]


@pytest.mark.parametrize("name", CNNS)
def test_lrp_0_conserves_on_bias_free_timm_cnns(name):
    net = model(name, bias=False)
    f, params = fattr.functional(net)
    x = images(name, batch=1, seed=3)
    r = fattr.lrp(f, EXACT)(params, x, 0)
    logit = net(x)[:, 0].detach()
    tolerance = TOLERANCE[x.dtype] * 100
    torch.testing.assert_close(r.sum((1, 2, 3)), logit, rtol=tolerance, atol=tolerance)


@pytest.mark.parametrize("composite", ["attnlrp", "cp_lrp"])
def test_attnlrp_on_timm_vit_fused_and_explicit_attention_agree(composite):
    # timm's Attention calls F.scaled_dot_product_attention (fused_attn) or writes it out
    # (q * scale @ k^T, softmax, @ v): both get the same rule
    results = []
    for fused in (True, False):
        net = model("vit_tiny_patch16_224")
        for block in net.blocks:
            block.attn.fused_attn = fused
        f, params = fattr.functional(net)
        x = images("vit_tiny_patch16_224", seed=4)
        results.append(fattr.lrp(f, composite)(params, x, 3))
    assert relative(results[0], results[1]) < 1e-12
    gxi = fattr.input_x_gradient(f)(params, x, 3)
    assert relative(results[0], gxi) > 1e-2


def test_cp_lrp_conserves_on_a_bias_free_timm_vit():
    net = model("vit_tiny_patch16_224", bias=False)
    before = state_snapshot(net)
    f, params = fattr.functional(net)
    x = images("vit_tiny_patch16_224", seed=5)
    r = fattr.lrp(f, "cp_lrp")(params, x, 1)
    torch.testing.assert_close(r.sum((1, 2, 3)), net(x)[:, 1].detach(), rtol=1e-10,
                               atol=1e-12)
    assert_unchanged(net, before)


@pytest.mark.parametrize("name", [*CNNS, "vit_tiny_patch16_224"])
def test_deeplift_runs_on_all_four(name):
    net = model(name)
    before = state_snapshot(net)
    f, params = fattr.functional(net)
    x = images(name, seed=6)
    a = fattr.deeplift(f)(params, x, 1)
    gxi = fattr.input_x_gradient(f)(params, x, 1)
    assert a.shape == x.shape and torch.isfinite(a).all()
    assert relative(a, gxi) > 1e-3
    gap = fattr.completeness_gap(f, params, x, a, 1).abs().max()
    if name == "resnet50":  # ReLU, max pooling and BatchNorm only: complete
        assert gap < 1e-10
    assert_unchanged(net, before)


def test_guided_backprop_on_a_gelu_vit_says_so():
    f, params = fattr.functional(model("vit_tiny_patch16_224"))
    with pytest.raises(fattr.FattrError, match="guided_backprop: the model has no ReLU"):
        fattr.guided_backprop(f)(params, images("vit_tiny_patch16_224"), 0)
