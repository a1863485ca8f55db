"""AttnLRP and CP-LRP on transformers: parity with lxt (the AttnLRP authors' library) on
torchvision's VisionTransformer, a hand-written Gradient x Input reference, conservation,
composition (params gradient, vmap over targets, per_example) and reliability."""

from __future__ import annotations

import copy
import math
import pathlib
import sys
import types

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import fattr
from fattr.lrp import CPLRP, AttnLRP, Epsilon, FrozenStd, Gamma, first
from tests.conftest import assert_unchanged, directional_derivative, state_snapshot
from tests.lrp.reference_rules import IdentityRule, ScaleGrad

EXACT = {"epsilon": 0.0, "stabilizer": 0.0}  # LRP-0: Gradient x Input without stabilizers


def vit(seed: int = 0, bias: bool = True) -> nn.Module:
    """A small float64 torchvision ViT with random head, class token and positions; `bias=False`
    zeroes every bias, the class token and the positional embedding (a bias-free network)."""
    from torchvision.models import VisionTransformer

    torch.manual_seed(seed)
    net = VisionTransformer(image_size=32, patch_size=8, num_layers=2, num_heads=2,
                            hidden_dim=32, mlp_dim=64, num_classes=5).double()
    with torch.no_grad():
        net.heads.head.weight.normal_(0, 0.5)
        net.heads.head.bias.normal_(0, 0.1)
        net.class_token.normal_(0, 1)
        net.encoder.pos_embedding.normal_(0, 0.5)
        for name, p in net.named_parameters():
            if name.endswith("bias") and p.ndim == 1:
                p.normal_(0, 0.1)  # torchvision initializes them to zero
            if not bias and (name.endswith("bias") or name in ("class_token",
                                                                "encoder.pos_embedding")):
                p.zero_()
    return net.eval()


def images(batch: int = 2, seed: int = 1) -> torch.Tensor:
    return torch.randn(batch, 3, 32, 32, dtype=torch.float64,
                       generator=torch.Generator().manual_seed(seed))


def relative(ours: torch.Tensor, theirs: torch.Tensor) -> float:
    return float((ours.detach() - theirs).abs().max() / theirs.abs().max())


# lxt ---------------------------------------------------------------------------------------

@pytest.fixture
def lxt_patches():
    """lxt's efficient modules, imported without its package __init__ (which fails with this
    transformers version); yields `patched(cp_lrp_map)`, a context manager that patches the
    classes and ALWAYS restores their forwards (and sys.modules) afterwards."""
    import contextlib

    import lxt  # a test dependency (installed with --no-deps, see the Makefile)

    root = pathlib.Path(lxt.__file__).parent / "efficient"
    saved = {k: sys.modules.get(k) for k in ("lxt.efficient", "lxt.efficient.models")}
    for name, path in (("lxt.efficient", root), ("lxt.efficient.models", root / "models")):
        package = types.ModuleType(name)
        package.__path__ = [str(path)]
        sys.modules[name] = package
    import lxt.efficient.rules as rules
    from lxt.efficient.models import vit_torch

    @contextlib.contextmanager
    def patched(identity_epsilon: float | None = None):
        classes = list(vit_torch.cp_LRP)
        forwards = {c: c.__dict__["forward"] for c in classes}
        defaults = rules.identity_rule_implicit_fn.forward.__defaults__
        try:
            for cls, patch in vit_torch.cp_LRP.items():
                patch(cls)
            if identity_epsilon is not None:
                rules.identity_rule_implicit_fn.forward.__defaults__ = (identity_epsilon,)
            yield
        finally:
            rules.identity_rule_implicit_fn.forward.__defaults__ = defaults
            for cls, forward in forwards.items():
                cls.forward = forward
                if "original_forward" in cls.__dict__:
                    delattr(cls, "original_forward")

    yield patched
    for name, module in saved.items():
        if module is None:
            sys.modules.pop(name, None)
        else:
            sys.modules[name] = module
    assert all("original_forward" not in c.__dict__ for c in (nn.GELU, nn.MultiheadAttention))


def lxt_cp_lrp(patched, net: nn.Module, x: torch.Tensor, target: int,
               identity_epsilon: float | None = None) -> torch.Tensor:
    """lxt's CP-LRP for torchvision ViT: x * the gradient of the target logit, classes patched,
    on a separate deep copy of the model."""
    peer = copy.deepcopy(net)
    with patched(identity_epsilon):
        xx = x.clone().requires_grad_(True)
        peer(xx)[:, target].sum().backward()
    return (xx * xx.grad).detach()


def test_cp_lrp_equals_lxt_on_torchvision_vit(lxt_patches):
    net = vit()
    before = state_snapshot(net)
    f, params = fattr.functional(net)
    x = images()
    ours = fattr.lrp(f, "cp_lrp", **EXACT)(params, x, 3)
    # lxt's identity rule on GELU divides by (x + 1e-10): the only difference, 7e-9 here
    assert relative(ours, lxt_cp_lrp(lxt_patches, net, x, 3)) < 1e-8
    # without that 1e-10 the two agree to rounding
    assert relative(ours, lxt_cp_lrp(lxt_patches, net, x, 3, identity_epsilon=0.0)) < 1e-13
    assert forward_is_plain(net)
    assert_unchanged(net, before)


def test_cp_lrp_with_default_epsilon_stays_close_to_lxt(lxt_patches):
    net = vit(seed=2)
    f, params = fattr.functional(net)
    x = images(seed=3)
    ours = fattr.lrp(f, "cp_lrp")(params, x, torch.tensor([0, 4]))
    theirs = torch.cat([lxt_cp_lrp(lxt_patches, net, x[i:i + 1], t) for i, t in enumerate((0, 4))])
    assert 0 < relative(ours, theirs) < 1e-3


def forward_is_plain(net: nn.Module) -> bool:
    """The lxt patches left no trace on the classes the model uses."""
    return all("original_forward" not in type(m).__dict__ for m in net.modules()) and \
        nn.LayerNorm.forward.__module__ == "torch.nn.modules.normalization"


# hand-written AttnLRP reference --------------------------------------------------------------

def reference_vit(net: nn.Module, x: torch.Tensor, attn: str) -> torch.Tensor:
    """torchvision's ViT forward in explicit ops with AttnLRP's (or CP-LRP's) modified
    gradient: std detached in LayerNorm, GELU by the identity rule, q and k gradients / 4 and v
    / 2 (CP: q and k detached)."""
    p = dict(net.named_parameters())

    def layer_norm(h, prefix):
        mean = h.mean(-1, keepdim=True)
        std = ((h - mean) ** 2).mean(-1, keepdim=True).add(1e-6).sqrt().detach()
        return (h - mean) / std * p[prefix + ".weight"] + p[prefix + ".bias"]

    def attention(h, prefix, heads=2):
        w, b = p[prefix + ".in_proj_weight"], p[prefix + ".in_proj_bias"]
        q, k, v = (F.linear(h, wi, bi) for wi, bi in zip(w.chunk(3), b.chunk(3)))
        if attn == "attnlrp":
            q, k, v = ScaleGrad.apply(q, 0.25), ScaleGrad.apply(k, 0.25), ScaleGrad.apply(v, 0.5)
        else:
            q, k = q.detach(), k.detach()
        split = lambda t: t.reshape(*t.shape[:2], heads, -1).transpose(1, 2)
        q, k, v = split(q), split(k), split(v)
        a = torch.softmax(q @ k.transpose(-1, -2) / math.sqrt(q.shape[-1]), -1)
        out = (a @ v).transpose(1, 2).reshape(h.shape)
        return F.linear(out, p[prefix + ".out_proj.weight"], p[prefix + ".out_proj.bias"])

    x = x.clone().requires_grad_(True)
    h = F.conv2d(x, p["conv_proj.weight"], p["conv_proj.bias"], stride=8)
    h = h.flatten(2).transpose(1, 2)
    h = torch.cat([p["class_token"].expand(len(x), -1, -1), h], 1) + p["encoder.pos_embedding"]
    for i in range(2):
        block = f"encoder.layers.encoder_layer_{i}"
        h = h + attention(layer_norm(h, block + ".ln_1"), block + ".self_attention")
        m = F.linear(layer_norm(h, block + ".ln_2"), p[block + ".mlp.0.weight"],
                     p[block + ".mlp.0.bias"])
        h = h + F.linear(IdentityRule.apply(m, F.gelu), p[block + ".mlp.3.weight"],
                         p[block + ".mlp.3.bias"])
    logits = F.linear(layer_norm(h, "encoder.ln")[:, 0], p["heads.head.weight"],
                      p["heads.head.bias"])
    torch.testing.assert_close(logits, net(x))  # the same function as torchvision's
    (grad,) = torch.autograd.grad(logits[:, 1].sum(), x)
    return (x * grad).detach()


@pytest.mark.parametrize("composite", ["attnlrp", "cp_lrp"])
def test_equals_hand_written_gradient_x_input(composite):
    net = vit(seed=4)
    f, params = fattr.functional(net)
    x = images(seed=5)
    ours = fattr.lrp(f, composite, **EXACT)(params, x, 1)
    assert relative(ours, reference_vit(net, x, composite)) < 1e-12
    other = "cp_lrp" if composite == "attnlrp" else "attnlrp"
    assert relative(ours, reference_vit(net, x, other)) > 1e-2  # the attention rule matters


@pytest.mark.parametrize("composite", ["attnlrp", "cp_lrp"])
def test_single_backward_equals_the_layer_by_layer_relevance(composite):
    # the same rules with stabilizers, once as one modified backward pass and once handed down
    # layer by layer with a vjp per layer (a Gamma rule, here for no layer, forces that form)
    net = vit(seed=15)
    f, params = fattr.functional(net)
    x = images(seed=16)
    rules = fattr.lrp.COMPOSITES[composite](epsilon=1e-3, stabilizer=1e-3)
    single = fattr.lrp.model(f, rules)
    layered = fattr.lrp.model(f, {nn.Conv3d: Gamma(), **rules})
    assert single.single_backward and not layered.single_backward
    ours, theirs = (fattr.saliency(g, abs=False)(params, x, 2) for g in (single, layered))
    assert relative(ours, theirs) < 1e-12
    exact = fattr.lrp(f, composite)(params, x, 2)
    assert relative(ours, exact) > 1e-6  # the stabilizers matter


# conservation --------------------------------------------------------------------------------

def test_cp_lrp_conserves_the_logit_on_a_bias_free_vit():
    net = vit(seed=6, bias=False)
    f, params = fattr.functional(net)
    x = images(seed=7)
    r = fattr.lrp(f, "cp_lrp", **EXACT)(params, x, 2)
    logit = net(x)[:, 2].detach()
    torch.testing.assert_close(r.sum((1, 2, 3)), logit, rtol=1e-10, atol=1e-12)
    attn = fattr.lrp(f, "attnlrp", **EXACT)(params, x, 2)
    assert (attn.sum((1, 2, 3)) - logit).abs().min() > 1e-3  # AttnLRP's softmax does not


class OneBlock(nn.Module):
    """Bias-free LayerNorm -> self-attention -> linear head on token input (B, S, E)."""

    def __init__(self, seed: int = 0, sharpness: float = 1.0):
        super().__init__()
        torch.manual_seed(seed)
        self.ln = nn.LayerNorm(8, bias=False)
        self.attn = nn.MultiheadAttention(8, 2, bias=False, batch_first=True)
        self.head = nn.Linear(5 * 8, 3, bias=False)
        with torch.no_grad():
            self.attn.in_proj_weight[:8] *= sharpness  # sharper queries: harder attention
        self.double().eval()

    def forward(self, x):
        h = self.ln(x)
        return self.head(self.attn(h, h, h, need_weights=False)[0].flatten(1))

    def softmax_relevance(self, x, target):
        """S = sum_s s * d logit / d s over the attention scores s (plain autograd): the
        relevance AttnLRP's softmax rule hands to the scores."""
        h = self.ln(x)
        q, k, v = F.linear(h, self.attn.in_proj_weight).chunk(3, -1)
        split = lambda t: t.unflatten(-1, (2, 4)).transpose(1, 2)
        s = split(q) @ split(k).transpose(-1, -2) / 2.0
        s.retain_grad()
        out = (torch.softmax(s, -1) @ split(v)).transpose(1, 2).flatten(-2)
        logit = self.head(self.attn.out_proj(out).flatten(1))[:, target]
        logit.sum().backward()
        return (s * s.grad).sum((1, 2, 3)).detach(), logit.detach()


def test_attnlrp_relevance_balance_through_attention():
    # Everything but the softmax conserves: LayerNorm with a constant std, the bias-free head and
    # projections; the value path carries half (A v's uniform rule), the scores the other half
    # through the softmax rule: sum R_x = logit / 2 + S / 2, S as the softmax rule computes it.
    x = torch.randn(4, 5, 8, dtype=torch.float64)
    net = OneBlock()
    f, params = fattr.functional(net)
    total = fattr.lrp(f, "attnlrp", **EXACT)(params, x, 0).sum((1, 2))
    s, logit = net.softmax_relevance(x, 0)
    torch.testing.assert_close(total, logit / 2 + s / 2, rtol=1e-10, atol=1e-12)
    assert (s - logit).abs().min() > 1e-3  # the softmax rule is not conservative here
    torch.testing.assert_close(fattr.lrp(f, "cp_lrp", **EXACT)(params, x, 0).sum((1, 2)), logit)


def test_attnlrp_hard_attention_keeps_exactly_half():
    # a hard (saturated) attention pattern: the softmax's Taylor relevance vanishes and the
    # attention hands down exactly the value path's half of its relevance
    net = OneBlock(seed=1, sharpness=1e5)
    f, params = fattr.functional(net)
    x = torch.randn(4, 5, 8, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    s, logit = net.softmax_relevance(x, 2)
    assert s.abs().max() < 1e-10 * logit.abs().max()
    total = fattr.lrp(f, "attnlrp", **EXACT)(params, x, 2).sum((1, 2))
    torch.testing.assert_close(total, logit / 2, rtol=1e-9, atol=1e-12)


# composition ---------------------------------------------------------------------------------

class TinyViT(nn.Module):
    """A tiny transformer on token input: the params-gradient test's model (fast in float64)."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(8)
        from torchvision.models.vision_transformer import EncoderBlock

        self.block = EncoderBlock(2, 8, 12, 0.0, 0.0)
        self.ln = nn.LayerNorm(8)
        self.head = nn.Linear(8, 3)
        with torch.no_grad():
            for p in self.parameters():
                p.add_(torch.randn_like(p) * 0.3)
        self.double().eval()

    def forward(self, x):
        return self.head(self.ln(self.block(x))[:, 0])


@pytest.mark.parametrize("composite", ["attnlrp", "cp_lrp"])
def test_params_gradient_of_relevance_matches_finite_differences(composite):
    net = TinyViT()
    before = state_snapshot(net)
    f, params = fattr.functional(net)
    params = {k: v.detach() for k, v in params.items()}
    x = torch.randn(2, 4, 8, dtype=torch.float64, generator=torch.Generator().manual_seed(9))
    weights = torch.randn_like(x)
    attr = fattr.lrp(f, composite, epsilon=1e-9)

    def loss(p):
        return (attr(p, x, 1) * weights).sum()

    analytic, numeric, grads = directional_derivative(loss, params)
    torch.testing.assert_close(analytic, numeric, rtol=1e-6, atol=1e-9)
    # the attention and LayerNorm parameters get a derivative (a bias after the last
    # nonlinearity does not: x * modified gradient does not depend on it)
    for name in ("block.self_attention.in_proj_weight", "block.ln_1.weight", "block.ln_1.bias",
                 "ln.weight"):
        assert grads[name].abs().max() > 1e-6
    assert_unchanged(net, before)


@pytest.mark.parametrize("composite", ["attnlrp", "cp_lrp"])
def test_vmap_over_targets_and_per_example(composite):
    net = vit(seed=10)
    f, params = fattr.functional(net)
    x = images(seed=11)
    attr = fattr.lrp(f, composite)
    targets = torch.tensor([[0, 1], [4, 2], [3, 3]])
    mapped = torch.func.vmap(attr, in_dims=(None, None, 0))(params, x, targets)
    calls = torch.stack([attr(params, x, t) for t in targets])
    torch.testing.assert_close(mapped, calls, rtol=1e-10, atol=1e-12)
    single = fattr.lrp(fattr.per_example(f), composite)
    per = torch.func.vmap(single, in_dims=(None, 0, 0))(params, x, targets[0])
    torch.testing.assert_close(per, calls[0], rtol=1e-10, atol=1e-12)


def test_attention_weights_are_returned_and_carry_no_relevance():
    class Weights(nn.Module):
        def __init__(self):
            super().__init__()
            self.attn = nn.MultiheadAttention(8, 2, batch_first=False)
            self.head = nn.Linear(8, 2)

        def forward(self, x):
            out, w = self.attn(x, x, x)  # need_weights=True (default), sequence first
            return self.head(out.mean(0)), w

    torch.manual_seed(12)
    net = Weights().double().eval()
    f, params = fattr.functional(net)
    x = torch.randn(5, 3, 8, dtype=torch.float64)  # (S, B, E)
    expected = net.attn(x, x, x)[1]
    g = fattr.lrp.model(f, "cp_lrp", output=lambda o: o[0])
    torch.testing.assert_close(g(params, x), net(x)[0])
    tree = g.tree()
    _, weights = torch.func.functional_call(tree, params, (x,))
    torch.testing.assert_close(weights, expected)
    # a score that reads only the weights: no relevance reaches the input
    # (one score per row of x's first axis: fattr refuses outputs that are not batch-first)
    through = fattr.lrp.model(f, "cp_lrp", output=lambda o: o[1].sum((0, 2)))
    torch.testing.assert_close(fattr.saliency(through, abs=False)(params, x),
                               torch.zeros_like(x), rtol=0, atol=1e-14)


def test_unbatched_attention_equals_the_batched_call():
    class Tokens(nn.Module):  # rows of x are the tokens of one sequence: an unbatched call
        def __init__(self, batched: bool):
            super().__init__()
            torch.manual_seed(13)
            self.batched = batched
            self.attn, self.head = nn.MultiheadAttention(8, 2), nn.Linear(8, 3)

        def forward(self, x):
            h = x[:, None] if self.batched else x  # (S, 1, E): sequence first, batch 1
            out = self.attn(h, h, h, need_weights=False)[0]
            return self.head(out[:, 0] if self.batched else out)

    x = torch.randn(5, 8, dtype=torch.float64)
    results = []
    for batched in (False, True):
        f, params = fattr.functional(Tokens(batched).double().eval())
        results.append(fattr.lrp(f, "attnlrp")(params, x, torch.tensor([0, 1, 2, 0, 1])))
    torch.testing.assert_close(results[0], results[1], rtol=1e-12, atol=1e-14)
    assert results[0].abs().max() > 1e-3


# reliability ---------------------------------------------------------------------------------

def attention_mask(length: int) -> torch.Tensor:
    """A float attention mask: a fixed random pattern of 0 and -3."""
    return -3.0 * (torch.arange(length)[:, None] * 7 % 3 == torch.arange(length) % 2)


def padding_mask(shape: tuple[int, int]) -> torch.Tensor:
    """Each example ignores its last (example index) keys."""
    batch, length = shape
    return torch.arange(length) >= length - torch.arange(batch)[:, None]


class SelfAttention(nn.Module):
    def __init__(self, attn: nn.MultiheadAttention, call: str = "self"):
        super().__init__()
        self.attn, self.call, self.head = attn, call, nn.Linear(8, 2)

    def forward(self, x):
        if self.call == "cross":
            out = self.attn(x, x.flip(1), x.flip(1))[0]
        elif self.call == "mask":
            out = self.attn(x, x, x, attn_mask=attention_mask(x.shape[1]).to(x))[0]
        elif self.call == "padding":
            out = self.attn(x, x, x, key_padding_mask=padding_mask(x.shape[:2]))[0]
        else:
            out = self.attn(x, x, x)[0]
        return self.head(out[:, 0])


@pytest.mark.parametrize(("attn", "match"), [
    (nn.MultiheadAttention(8, 2, kdim=4, vdim=4, batch_first=True),
     r"'attn' \(MultiheadAttention\): the module has separate q/k/v projection weights"),
    (nn.MultiheadAttention(8, 2, add_bias_kv=True, batch_first=True), "add_bias_kv"),
    (nn.MultiheadAttention(8, 2, add_zero_attn=True, batch_first=True), "add_zero_attn"),
])
@pytest.mark.parametrize("composite", ["attnlrp", "cp_lrp"])
def test_unsupported_attention_modules_fail_at_construction(attn, match, composite):
    net = SelfAttention(attn).eval()
    before = state_snapshot(net)
    f, _ = fattr.functional(net)
    with pytest.raises(fattr.FattrError, match=match):
        fattr.lrp(f, composite)
    assert_unchanged(net, before)


def reference_attention(net: SelfAttention, x: torch.Tensor, target: int) -> torch.Tensor:
    """AttnLRP on `SelfAttention` by hand: explicit ops, q and k gradients / 4, v / 2, masks
    added to the scores (True: not attended), plain autograd; x times the gradient."""
    attn, heads = net.attn, 2
    x = x.clone().requires_grad_(True)
    xk = x.flip(1) if net.call == "cross" else x
    w, b = attn.in_proj_weight.chunk(3), attn.in_proj_bias.chunk(3)
    split = lambda t: t.unflatten(-1, (heads, -1)).transpose(1, 2)
    q = split(ScaleGrad.apply(F.linear(x, w[0], b[0]), 0.25))
    k = split(ScaleGrad.apply(F.linear(xk, w[1], b[1]), 0.25))
    v = split(ScaleGrad.apply(F.linear(xk, w[2], b[2]), 0.5))
    scores = q @ k.transpose(-1, -2) / math.sqrt(q.shape[-1])
    if net.call == "mask":
        scores = scores + attention_mask(x.shape[1]).to(x)
    if net.call == "padding":
        scores = scores.masked_fill(padding_mask(x.shape[:2])[:, None, None], float("-inf"))
    out = (torch.softmax(scores, -1) @ v).transpose(1, 2).flatten(-2)
    logits = net.head(attn.out_proj(out)[:, 0])
    torch.testing.assert_close(logits, net(x))
    (grad,) = torch.autograd.grad(logits[:, target].sum(), x)
    return (x * grad).detach()


@pytest.mark.parametrize("call", ["cross", "mask", "padding"])
def test_cross_attention_and_masks_equal_the_hand_written_reference(call):
    torch.manual_seed(14)
    net = SelfAttention(nn.MultiheadAttention(8, 2, batch_first=True), call).double().eval()
    before = state_snapshot(net)
    f, params = fattr.functional(net)
    x = torch.randn(3, 5, 8, dtype=torch.float64)
    ours = fattr.lrp(f, "attnlrp")(params, x, 1)
    assert relative(ours, reference_attention(net, x, 1)) < 1e-12
    assert_unchanged(net, before)


def test_attention_in_training_mode_with_dropout_is_refused():
    net = SelfAttention(nn.MultiheadAttention(8, 2, dropout=0.1, batch_first=True)).eval()
    net.attn.train()
    f, params = fattr.functional(net)
    with pytest.raises(fattr.FattrError, match="training mode with dropout"):
        fattr.lrp(f, "cp_lrp")(params, torch.randn(2, 5, 8), 0)


def test_rules_on_the_wrong_module_or_with_first_are_refused():
    f, _ = fattr.functional(SelfAttention(nn.MultiheadAttention(8, 2, batch_first=True)).eval())
    # with a rule that has no single-backward form, the attention rules are module rules
    with pytest.raises(fattr.FattrError, match=r"AttnLRP rule is for nn.MultiheadAttention, "
                                               r"but the composite maps 'head' \(Linear\)"):
        fattr.lrp(f, {nn.Linear: AttnLRP(), nn.MultiheadAttention: CPLRP(), nn.Conv2d: Gamma()})
    with pytest.raises(fattr.FattrError, match=r"FrozenStd rule is for nn.LayerNorm"):
        fattr.lrp(f, {nn.MultiheadAttention: FrozenStd(), nn.Linear: Epsilon()})
    with pytest.raises(fattr.FattrError, match="cannot be used with a first"):
        fattr.lrp(f, {first(nn.MultiheadAttention): CPLRP(), nn.Linear: Epsilon()})


def test_other_composites_keep_the_clear_error():
    f, _ = fattr.functional(vit())
    with pytest.raises(fattr.FattrError, match=r"no LRP rule for .*\(MultiheadAttention\)"
                                               r".*'attnlrp'"):
        fattr.lrp(f, "epsilon")
