"""AttnLRP and CP-LRP on HuggingFace models (random weights from configs), through a model
function over input embeddings: conservation, parity with lxt 2.1's rules, a hand-written
reference, padding, vmap over targets, the parameter gradient, an unchanged model and errors."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import fattr
from tests.conftest import assert_unchanged, directional_derivative, state_snapshot
from tests.lrp import lxt_reference
from tests.lrp.reference_rules import IdentityRule, ScaleGrad

transformers = pytest.importorskip("transformers")
transformers.logging.set_verbosity_error()


class Embeds(nn.Module):
    """A causal LM or classifier as a function of its input embeddings (and attention mask)."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, embeds: torch.Tensor, attention_mask: torch.Tensor | None = None):
        return self.model(inputs_embeds=embeds, attention_mask=attention_mask).logits


SMALL = dict(hidden_size=16, intermediate_size=24, num_hidden_layers=2, num_attention_heads=4,
             vocab_size=11)


def llama(impl: str = "sdpa", seed: int = 0) -> Embeds:
    """A float64 Llama with grouped-query heads (4 query, 2 key/value heads); bias-free."""
    torch.manual_seed(seed)
    config = transformers.LlamaConfig(**SMALL, num_key_value_heads=2, attn_implementation=impl)
    return Embeds(transformers.LlamaForCausalLM(config).double().eval())


def other(kind: str, impl: str) -> Embeds:
    torch.manual_seed(1)
    heads = dict(num_key_value_heads=2, head_dim=4)
    config, model = {
        "qwen3": (transformers.Qwen3Config(**SMALL, **heads), transformers.Qwen3ForCausalLM),
        "gemma3": (transformers.Gemma3TextConfig(**SMALL, **heads),
                   transformers.Gemma3ForCausalLM),
        "gpt2": (transformers.GPT2Config(n_embd=16, n_layer=2, n_head=4, vocab_size=11),
                 transformers.GPT2LMHeadModel),
        "bert": (transformers.BertConfig(**SMALL, num_labels=3),
                 transformers.BertForSequenceClassification),
    }[kind]
    config._attn_implementation = impl
    return Embeds(model(config).double().eval())


def embeds(batch: int = 2, length: int = 6, seed: int = 2) -> torch.Tensor:
    return torch.randn(batch, length, 16, dtype=torch.float64,
                       generator=torch.Generator().manual_seed(seed))


def relative(ours: torch.Tensor, theirs: torch.Tensor) -> float:
    return float((ours.detach() - theirs).abs().max() / theirs.abs().max())


LAST = (5, 3)  # the logit of token 3 at the last position


# conservation ---------------------------------------------------------------------------------

@pytest.mark.parametrize("impl", ["eager", "sdpa"])
def test_cp_lrp_on_a_bias_free_llama_conserves_the_logit(impl):
    net = llama(impl)
    f, params = fattr.functional(net)
    x = embeds()
    r = fattr.lrp(f, "cp_lrp")(params, x, LAST)
    explained = fattr.lrp.model(f, "cp_lrp")(params, x)[:, 5, 3].detach()
    torch.testing.assert_close(r.sum((1, 2)), explained, rtol=1e-8, atol=0)
    # the explained logit is the model's, up to HuggingFace's float32 RMSNorm (LRP keeps float64)
    torch.testing.assert_close(explained, net(x)[:, 5, 3].detach(), rtol=1e-6, atol=1e-9)
    attn = fattr.lrp(f, "attnlrp")(params, x, LAST).sum((1, 2))
    assert (attn - explained).abs().min() > 1e-6 * explained.abs().max()  # softmax: no


@pytest.mark.parametrize("kind", ["qwen3", "gemma3"])
def test_cp_lrp_conserves_on_other_bias_free_decoders(kind):
    net = other(kind, "sdpa")
    f, params = fattr.functional(net)
    x = embeds()
    r = fattr.lrp(f, "cp_lrp")(params, x, LAST)
    explained = fattr.lrp.model(f, "cp_lrp")(params, x)[:, 5, 3].detach()
    torch.testing.assert_close(r.sum((1, 2)), explained, rtol=1e-8, atol=0)


# parity with lxt and with a hand-written reference ---------------------------------------------

@pytest.mark.parametrize("composite", ["attnlrp", "cp_lrp"])
@pytest.mark.parametrize("kind", ["llama", "qwen3", "gpt2"])
def test_parity_with_lxt(kind, composite):
    net = llama("eager") if kind == "llama" else other(kind, "eager")
    before = state_snapshot(net)
    f, params = fattr.functional(net)
    x = embeds()
    ours = fattr.lrp(f, composite)(params, x, LAST)
    cp = composite == "cp_lrp"
    if kind == "gpt2":
        patches = lxt_reference.gpt2(cp)
    else:
        modeling = getattr(transformers.models, kind)
        module = getattr(modeling, f"modeling_{kind}")
        patches = lxt_reference.gated_decoder(module, "Llama" if kind == "llama" else "Qwen3", cp)
    theirs = lxt_reference.relevance(net, x, lambda out: out[:, 5, 3], patches)
    # llama, qwen3: lxt's RMSNorm computes in float32 (fattr's in float64); gpt2: lxt's
    # identity rule divides by x + 1e-10
    assert relative(ours, theirs) < (1e-9 if kind == "gpt2" else 5e-7)
    assert_unchanged(net, before)
    assert "forward" not in transformers.models.gpt2.modeling_gpt2.GPT2MLP.__dict__ or \
        transformers.models.gpt2.modeling_gpt2.GPT2MLP.forward.__module__.startswith("transform")


def reference_llama(net: Embeds, x: torch.Tensor, composite: str, eager: bool
                    ) -> tuple[torch.Tensor, torch.Tensor]:
    """Llama's forward in explicit ops with AttnLRP's (or CP-LRP's) modified gradient: RMSNorm's
    scale detached, SiLU by the identity rule, q and k gradients / 4 and v / 2 (CP: q, k and
    the gate detached), the gated product / 2. Returns x times the gradient of the last logit
    3, and the logits."""
    model, config = net.model, net.model.config
    p = dict(model.named_parameters())
    heads, groups, size = 4, 2, 4
    x = x.clone().requires_grad_(True)
    batch, length, _ = x.shape

    def rms(h, name):
        scale = torch.rsqrt(h.pow(2).mean(-1, keepdim=True) + config.rms_norm_eps).detach()
        return p[name] * (h * scale)

    # the rotary angles in float32, as HuggingFace computes them
    inv = 1 / config.rope_parameters["rope_theta"] ** (torch.arange(0, size, 2).float() / size)
    angles = torch.arange(length).float()[:, None] * inv
    cos = torch.cat([angles, angles], -1).cos().double()
    sin = torch.cat([angles, angles], -1).sin().double()

    def rotate(t):
        half = torch.cat([-t[..., size // 2:], t[..., :size // 2]], -1)
        return t * cos + half * sin

    causal = torch.full((length, length), float("-inf")).triu(1).double()
    h = x
    for i in range(2):
        block = f"model.layers.{i}."
        a = rms(h, block + "input_layernorm.weight")
        split = lambda t: t.unflatten(-1, (-1, size)).transpose(1, 2)
        q = rotate(split(F.linear(a, p[block + "self_attn.q_proj.weight"])))
        k = rotate(split(F.linear(a, p[block + "self_attn.k_proj.weight"])))
        v = split(F.linear(a, p[block + "self_attn.v_proj.weight"]))
        k, v = k.repeat_interleave(groups, 1), v.repeat_interleave(groups, 1)
        if composite == "attnlrp":
            q, k, v = ScaleGrad.apply(q, 0.25), ScaleGrad.apply(k, 0.25), ScaleGrad.apply(v, 0.5)
        else:
            q, k = q.detach(), k.detach()
        scores = q @ k.transpose(-1, -2) / math.sqrt(size) + causal
        # eager attention takes its softmax in float32, as HuggingFace's does
        attention = torch.softmax(scores, -1, dtype=torch.float32 if eager else None).double()
        out = (attention @ v).transpose(1, 2).reshape(batch, length, heads * size)
        h = h + F.linear(out, p[block + "self_attn.o_proj.weight"])
        m = rms(h, block + "post_attention_layernorm.weight")
        gate = IdentityRule.apply(F.linear(m, p[block + "mlp.gate_proj.weight"]), F.silu)
        up = F.linear(m, p[block + "mlp.up_proj.weight"])
        product = ScaleGrad.apply(gate * up, 0.5) if composite == "attnlrp" else gate.detach() * up
        h = h + F.linear(product, p[block + "mlp.down_proj.weight"])
    logits = F.linear(rms(h, "model.norm.weight"), p["lm_head.weight"])
    torch.testing.assert_close(logits, net(x), rtol=1e-5, atol=1e-7)  # HF: float32 RMSNorm
    (grad,) = torch.autograd.grad(logits[:, 5, 3].sum(), x)
    return (x * grad).detach(), logits.detach()


@pytest.mark.parametrize("impl", ["eager", "sdpa"])
@pytest.mark.parametrize("composite", ["attnlrp", "cp_lrp"])
def test_llama_equals_the_hand_written_gradient_x_input(composite, impl):
    net = llama(impl, seed=3)
    f, params = fattr.functional(net)
    x = embeds(seed=4)
    ours = fattr.lrp(f, composite)(params, x, LAST)
    theirs, logits = reference_llama(net, x, composite, impl == "eager")
    assert relative(ours, theirs) < 1e-12
    # the same under torch.func (custom Function rule steps instead of plain autograd's nodes)
    g = fattr.lrp.model(f, composite)
    transformed = torch.func.grad(lambda v: g(params, v)[:, 5, 3].sum())(x)
    assert relative(transformed, theirs) < 1e-12
    # the model under LRP is the reference's function (RMSNorm in float64)
    torch.testing.assert_close(fattr.lrp.model(f, composite)(params, x), logits, rtol=1e-12,
                               atol=1e-15)
    gxi = fattr.input_x_gradient(f)(params, x, LAST)
    assert relative(ours, gxi) > 1e-2  # the rules matter


# other architectures --------------------------------------------------------------------------

@pytest.mark.parametrize("impl", ["eager", "sdpa"])
@pytest.mark.parametrize("kind", ["gemma3", "gpt2", "bert"])
def test_other_architectures_run_and_differ_from_gradient_x_input(kind, impl):
    net = other(kind, impl)
    before = state_snapshot(net)
    f, params = fattr.functional(net)
    x = embeds()
    target = 1 if kind == "bert" else LAST
    attn = fattr.lrp(f, "attnlrp")(params, x, target)
    cp = fattr.lrp(f, "cp_lrp")(params, x, target)
    gxi = fattr.input_x_gradient(f)(params, x, target)
    assert attn.shape == cp.shape == x.shape and torch.isfinite(attn).all()
    assert relative(attn, gxi) > 1e-2 and relative(cp, gxi) > 1e-2 and relative(attn, cp) > 1e-4
    assert_unchanged(net, before)


def test_eager_and_sdpa_attention_agree():
    x = embeds(seed=5)
    results = []
    for impl in ("eager", "sdpa"):
        f, params = fattr.functional(llama(impl, seed=6))
        results.append(fattr.lrp(f, "attnlrp")(params, x, LAST))
    assert relative(results[0], results[1]) < 1e-8  # eager's softmax runs in float32


# masks and padding -----------------------------------------------------------------------------

def test_padded_batch_equals_unpadded_examples():
    net = llama(seed=7)
    f, params = fattr.functional(net)
    g = fattr.lrp.model(f, "attnlrp")
    lengths = (6, 4)
    x = embeds(seed=8)
    mask = (torch.arange(6) < torch.tensor(lengths)[:, None]).long()  # right padding

    def relevance(inputs, attention_mask, positions):
        def score(v):
            logits = g(params, v, attention_mask)
            return logits[torch.arange(len(v)), positions, 3].sum()
        return torch.func.grad(score)(inputs)

    padded = relevance(x, mask, torch.tensor(lengths) - 1)
    for i, n in enumerate(lengths):
        alone = relevance(x[i:i + 1, :n], torch.ones(1, n, dtype=torch.long),
                          torch.tensor([n - 1]))
        torch.testing.assert_close(padded[i, :n], alone[0], rtol=1e-9, atol=1e-12)
        assert (padded[i, n:].abs() < 1e-12).all()  # padding tokens get no relevance


# composition ----------------------------------------------------------------------------------

def test_vmap_over_targets_equals_separate_calls():
    f, params = fattr.functional(llama(seed=9))
    x = embeds(seed=10)
    attr = fattr.lrp(f, "attnlrp")
    targets = torch.tensor([[0, 3], [7, 7], [10, 1]])  # (K, B) token ids at the last position
    mapped = torch.func.vmap(lambda t: attr(params, x, lambda out: out[torch.arange(2), 5, t])
                             )(targets)
    calls = torch.stack([attr(params, x, lambda out, t=t: out[torch.arange(2), 5, t])
                         for t in targets])
    torch.testing.assert_close(mapped, calls, rtol=1e-10, atol=1e-13)


@pytest.mark.parametrize("composite", ["attnlrp", "cp_lrp"])
def test_params_gradient_of_relevance_matches_finite_differences(composite):
    net = llama(seed=11)
    before = state_snapshot(net)
    f, params = fattr.functional(net)
    params = {k: v.detach() for k, v in params.items()}
    x = embeds(length=4, seed=12)
    weights = torch.randn_like(x)
    attr = fattr.lrp(f, composite)

    def loss(p):
        return (attr(p, x, (3, 2)) * weights).sum()

    analytic, numeric, grads = directional_derivative(loss, params)
    # HuggingFace's rotary embedding and float32 casts limit the finite differences to ~1e-7
    torch.testing.assert_close(analytic, numeric, rtol=1e-5, atol=1e-8)
    for name in ("self_attn.v_proj.weight", "mlp.up_proj.weight", "input_layernorm.weight"):
        name = "model.model.layers.0." + name
        assert grads[name].abs().max() > 1e-6
    assert_unchanged(net, before)


# reliability ----------------------------------------------------------------------------------

class Exponential(nn.Module):
    def __init__(self):
        super().__init__()
        self.attn = nn.MultiheadAttention(8, 2, batch_first=True)
        self.head = nn.Linear(8, 2)

    def forward(self, x):
        h = self.attn(x, x, x)[0]
        return self.head(h.exp()[:, 0])


def test_an_uncovered_call_raises_naming_it():
    net = Exponential().eval()
    before = state_snapshot(net)
    f, params = fattr.functional(net)
    with pytest.raises(fattr.FattrError, match=r"lrp: the model calls Tensor.exp on a tensor "
                                               "that depends on the input"):
        fattr.lrp(f, "attnlrp")(params, torch.randn(2, 3, 8), 0)
    assert_unchanged(net, before)


def test_the_model_is_not_patched():
    from transformers.models.llama import modeling_llama

    forwards = {cls: cls.__dict__.get("forward") for cls in (
        modeling_llama.LlamaMLP, modeling_llama.LlamaRMSNorm, modeling_llama.LlamaAttention)}
    interface = modeling_llama.eager_attention_forward
    net = llama()
    f, params = fattr.functional(net)
    fattr.lrp(f, "cp_lrp")(params, embeds(), LAST)
    assert {cls: cls.__dict__.get("forward") for cls in forwards} == forwards
    assert modeling_llama.eager_attention_forward is interface
    assert not torch.overrides._get_current_function_mode_stack()
