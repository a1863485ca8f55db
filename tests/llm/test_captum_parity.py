"""Parity with captum 0.9's LLMGradientAttribution and LLMAttribution, float64 Llama and GPT-2.

captum attributes each target token separately on the growing prefix prompt + target[:t];
fattr teacher-forces prompt + target once and batches the T backward passes (or scores all T
tokens from each perturbed pass). By causality the two are the same function; the results
differ by float rounding only (captum's LLMAttribution accumulates in float32, hence 1e-6).

captum's LLMAttribution runs token by token with the model's KV cache by default
(`use_cached_outputs=True`); with transformers 5.x that path scores every token after the first
differently from its own uncached path and from `forward_in_tokens=False` (up to 30% here; see
`test_captum_cached_decoding_disagrees`), so the perturbation parity uses the uncached path.
"""

from __future__ import annotations

import captum.attr as ca
import pytest
import torch
from transformers import GPT2LMHeadModel

import fattr
from fattr.perturbation.engine import random_permutations
from tests.llm.models import gpt2, llama, rel_err, word_tokenizer

PROMPT = "the cat sat on the mat and"
TARGET = torch.tensor([8, 10, 11, 4, 13])  # sat ran to the park


def embedding(model):
    return model.get_input_embeddings()


@pytest.fixture(params=["llama", "gpt2"])
def model(request):
    return {"llama": llama, "gpt2": gpt2}[request.param]()


def check(ours, theirs, tolerance=1e-6):
    assert ours.token_attr.shape == theirs.token_attr.shape == (5, 8)
    assert rel_err(ours.token_attr, theirs.token_attr) <= tolerance
    assert rel_err(ours.seq_attr, theirs.seq_attr) <= tolerance
    assert ours.token_attr.abs().max() > 1e-4  # not trivially zero


def test_integrated_gradients(model):
    tok = word_tokenizer()
    ours = fattr.llm.attribute(model, tok, PROMPT, TARGET, steps=16)
    peer = ca.LLMGradientAttribution(ca.LayerIntegratedGradients(model, embedding(model)), tok)
    theirs = peer.attribute(ca.TextTokenInput(PROMPT, tok), target=TARGET, n_steps=16)
    check(ours, theirs)


def test_integrated_gradients_other_baseline_and_rule(model):
    tok = word_tokenizer()
    ours = fattr.llm.attribute(model, tok, PROMPT, TARGET, steps=7, quadrature="riemann_left",
                               baseline=3)
    peer = ca.LLMGradientAttribution(ca.LayerIntegratedGradients(model, embedding(model)), tok)
    theirs = peer.attribute(ca.TextTokenInput(PROMPT, tok, baselines=3), target=TARGET,
                            n_steps=7, method="riemann_left")
    check(ours, theirs)


@pytest.mark.parametrize("method, multiply", [("input_x_gradient", True), ("saliency", False)])
def test_gradient_x_activation(model, method, multiply):
    """saliency(abs=False) is captum's LayerGradientXActivation without the multiplication."""
    tok = word_tokenizer()
    kwargs = {"abs": False} if method == "saliency" else {}
    ours = fattr.llm.attribute(model, tok, PROMPT, TARGET, method=method, **kwargs)
    layer = ca.LayerGradientXActivation(model, embedding(model), multiply_by_inputs=multiply)
    theirs = ca.LLMGradientAttribution(layer, tok).attribute(ca.TextTokenInput(PROMPT, tok),
                                                              target=TARGET)
    if method == "saliency" and isinstance(model, GPT2LMHeadModel):
        # Every use of GPT-2's embeddings passes a LayerNorm, whose gradient sums to zero over
        # the embedding axis: the signed sum is zero up to rounding (hence abs=True default).
        assert ours.token_attr.abs().max() < 1e-12 and theirs.token_attr.abs().max() < 1e-12
        return
    check(ours, theirs)


def test_saliency_abs_is_the_absolute_embedding_gradient(model):
    """Default saliency: sum_d |d log p_t / d e_{i,d}| per prompt token, against captum's
    Saliency on a function of the prompt embeddings, one target token at a time."""
    tok = word_tokenizer()
    ours = fattr.llm.attribute(model, tok, PROMPT, TARGET, method="saliency")
    ids = torch.tensor(tok(PROMPT)["input_ids"])
    full = torch.cat([ids, TARGET[:-1]])
    rows = []
    for t in range(len(TARGET)):
        def log_prob(e, t=t):
            embeds = torch.cat([e, embedding(model)(full[None, len(ids):]).expand(len(e), -1, -1)],
                               1)
            logits = model(inputs_embeds=embeds).logits[:, len(ids) - 1 + t]
            return torch.log_softmax(logits, -1)[:, TARGET[t]]
        e = embedding(model)(ids[None]).detach()
        rows.append(ca.Saliency(log_prob).attribute(e).sum(-1)[0])
    assert rel_err(ours.token_attr, torch.stack(rows)) <= 1e-9


def test_feature_ablation(model):
    tok = word_tokenizer()
    ours = fattr.llm.attribute(model, tok, PROMPT, TARGET, method="feature_ablation",
                               batch_size=3)
    peer = ca.LLMAttribution(ca.FeatureAblation(model), tok)
    theirs = peer.attribute(ca.TextTokenInput(PROMPT, tok), target=TARGET,
                            use_cached_outputs=False)
    check(ours, theirs)
    one_pass = peer.attribute(ca.TextTokenInput(PROMPT, tok), target=TARGET,
                              forward_in_tokens=False)
    check(ours, one_pass)


def test_captum_cached_decoding_disagrees():
    """Why the parity tests pass use_cached_outputs=False (captum 0.9, transformers 5.x)."""
    model, tok = llama(), word_tokenizer()
    peer = ca.LLMAttribution(ca.FeatureAblation(model), tok)
    cached = peer.attribute(ca.TextTokenInput(PROMPT, tok), target=TARGET)
    plain = peer.attribute(ca.TextTokenInput(PROMPT, tok), target=TARGET,
                           use_cached_outputs=False)
    assert rel_err(cached.token_attr[:1], plain.token_attr[:1]) <= 1e-6  # first token: same
    assert rel_err(cached.token_attr, plain.token_attr) > 1e-2


@pytest.mark.parametrize("score", ["log_prob", "prob"])
def test_shapley_value_sampling_same_orderings(model, score):
    """captum draws its orderings from a `permutation_generator`: it gets fattr's draws."""
    tok = word_tokenizer()
    samples = 2
    ours = fattr.llm.attribute(model, tok, PROMPT, TARGET, method="shapley_value_sampling",
                               samples=samples, score=score,
                               generator=torch.Generator().manual_seed(7))
    orders = random_permutations(samples, 8, torch.Generator().manual_seed(7), "cpu").tolist()
    sampler = ca.ShapleyValueSampling(model)
    sampler.permutation_generator = lambda features, n: iter(orders)
    peer = ca.LLMAttribution(sampler, tok, attr_target=score)
    theirs = peer.attribute(ca.TextTokenInput(PROMPT, tok), target=TARGET, n_samples=samples,
                            forward_in_tokens=False)  # token by token: see feature ablation
    check(ours, theirs)
