"""fattr.llm.attribute: one pass for all target tokens, generation, scores, features, prefix."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import fattr
from tests.conftest import assert_unchanged, state_snapshot
from tests.llm.models import EOS, gpt2, llama, word_tokenizer

PROMPT = "the cat sat on the mat"


def forward_passes(model: nn.Module, fn) -> tuple[int, int]:
    """(calls of model.forward, rows sent through it) while fn() runs."""
    seen: list[int] = []

    def hook(module, args, kwargs, out):
        embeds = kwargs.get("inputs_embeds")
        seen.append((embeds if embeds is not None else args[0]).shape[0])

    handle = model.register_forward_hook(hook, with_kwargs=True)
    try:
        fn()
    finally:
        handle.remove()
    return len(seen), sum(seen)


@pytest.mark.parametrize("method, kwargs", [
    ("integrated_gradients", {"steps": 8}),
    ("gradient_shap", {"samples": 3, "generator": torch.Generator().manual_seed(0)}),
    ("feature_ablation", {}),
    ("shapley_value_sampling", {"samples": 2, "generator": torch.Generator().manual_seed(0)}),
    ("kernel_shap", {"samples": 6, "generator": torch.Generator().manual_seed(0)}),
])
def test_forward_passes_do_not_grow_with_the_target(method, kwargs):
    model, tok = llama(), word_tokenizer()
    counts = {}
    for steps in (2, 12):
        target = torch.arange(4, 4 + steps) % 20 + 4
        res = None

        def run(target=target):
            nonlocal res
            res = fattr.llm.attribute(model, tok, PROMPT, target, method=method, **kwargs)

        counts[steps] = forward_passes(model, run)
        assert res.token_attr.shape == (steps, 7)
    assert counts[2] == counts[12], counts
    assert counts[2][0] <= 2  # all perturbations in one forward call, f(x) maybe in another


def test_chunked_targets_equal_one_vmap_and_batch_size_does_not_matter():
    model, tok = llama(), word_tokenizer()
    target = torch.tensor([5, 6, 7, 8, 9])
    one = fattr.llm.attribute(model, tok, PROMPT, target, steps=6)
    chunked = fattr.llm.attribute(model, tok, PROMPT, target, steps=6, target_chunk=2,
                                  batch_size=4)
    torch.testing.assert_close(chunked.token_attr, one.token_attr, rtol=1e-9, atol=1e-12)
    torch.testing.assert_close(chunked.seq_attr, one.seq_attr, rtol=1e-9, atol=1e-12)
    calls, _ = forward_passes(model, lambda: fattr.llm.attribute(
        model, tok, PROMPT, target, steps=6, target_chunk=2))
    assert calls == 3  # one per chunk of the 5 target tokens


@pytest.mark.parametrize("build", [llama, gpt2])
def test_greedy_target_equals_generate(build):
    model, tok = build(seed=1), word_tokenizer()
    ids = torch.tensor([tok(PROMPT)["input_ids"]])
    expected = model.generate(ids, do_sample=False, max_new_tokens=6)[0, ids.shape[1]:]
    res = fattr.llm.attribute(model, tok, PROMPT, method="feature_ablation", max_new_tokens=6)
    assert res.output_tokens == [tok.decode([i]) for i in expected.tolist()]
    assert res.token_attr.shape == (len(expected), 7)


class NoGenerate(nn.Module):
    """A causal LM without `generate` (a plain module): fattr decodes step by step, and stops
    at `config.eos_token_id` when the module has a config."""

    def __init__(self, model):
        super().__init__()
        self.model = model
        self.config = model.config

    def get_input_embeddings(self):
        return self.model.get_input_embeddings()

    def forward(self, input_ids=None, inputs_embeds=None):
        return self.model(input_ids=input_ids, inputs_embeds=inputs_embeds).logits


def eos_as_third_token(model, ids: torch.Tensor) -> None:
    """Swap the output rows of the model's third greedy token and EOS: it now says EOS there."""
    third = int(model.generate(ids, do_sample=False, max_new_tokens=3)[0, -1])
    with torch.no_grad():
        rows = model.lm_head.weight
        rows[[EOS, third]] = rows[[third, EOS]].clone()


@pytest.mark.parametrize("plain", [False, True])
def test_generation_stops_after_the_end_of_sequence_token(plain):
    model, tok = llama(seed=1), word_tokenizer()
    ids = torch.tensor([tok(PROMPT)["input_ids"]])
    eos_as_third_token(model, ids)
    expected = model.generate(ids, do_sample=False, max_new_tokens=8)[0, ids.shape[1]:]
    assert expected[-1] == EOS and len(expected) <= 3
    lm = NoGenerate(model).eval() if plain else model
    res = fattr.llm.attribute(lm, tok, PROMPT, max_new_tokens=8, method="feature_ablation")
    assert res.output_tokens == [tok.decode([i]) for i in expected.tolist()]


def test_step_by_step_decoding_equals_generate():
    model, tok = llama(seed=1), word_tokenizer()
    ids = torch.tensor([tok(PROMPT)["input_ids"]])
    expected = model.generate(ids, do_sample=False, max_new_tokens=6)[0, ids.shape[1]:]
    res = fattr.llm.attribute(NoGenerate(model).eval(), tok, PROMPT, max_new_tokens=6,
                              method="feature_ablation")
    assert res.output_tokens == [tok.decode([i]) for i in expected.tolist()]


def test_seq_attr_of_a_nonlinear_method_is_its_own_attribution():
    """saliency (abs) of the sequence is |d sum_t log p_t / d e| summed over d, not the sum of
    the token rows; one more forward pass, whatever T. On GPT-2: HF's Llama computes RMSNorm
    in float32 even in a float64 model."""
    model, tok = gpt2(), word_tokenizer()
    ids, target = torch.tensor(tok(PROMPT)["input_ids"]), torch.tensor([5, 6, 7])
    res = fattr.llm.attribute(model, tok, PROMPT, target, method="saliency")
    e = model.get_input_embeddings()(ids[None]).detach().requires_grad_(True)
    rest = model.get_input_embeddings()(target[None, :-1]).detach()
    logits = model(inputs_embeds=torch.cat([e, rest], 1)).logits[0, len(ids) - 1:]
    total = torch.log_softmax(logits, -1).gather(1, target[:, None]).sum()
    expected = torch.autograd.grad(total, e)[0].abs().sum(-1)[0]
    torch.testing.assert_close(res.seq_attr, expected, rtol=1e-9, atol=1e-12)
    assert (res.seq_attr - res.token_attr.sum(0)).abs().max() > 1e-3
    calls = [forward_passes(model, lambda t=t: fattr.llm.attribute(
        model, tok, PROMPT, torch.arange(5, 5 + t), method="saliency"))[0] for t in (2, 9)]
    assert calls == [2, 2]


def test_seq_attr_of_the_joint_probability_is_complete():
    """score="prob": the sequence score is the joint probability prod_t p_t, attributed by its
    own IG (one more pass); IG's completeness: sum_i = P(target | prompt) - P(target | base)."""
    model, tok = gpt2(), word_tokenizer()
    ids, target = torch.tensor(tok(PROMPT)["input_ids"]), torch.tensor([5, 6, 7])
    res = fattr.llm.attribute(model, tok, PROMPT, target, steps=64, score="prob")
    with torch.no_grad():
        joint = [log_probs(model, x, target).sum().exp() for x in (ids, torch.zeros_like(ids))]
    torch.testing.assert_close(res.seq_attr.sum(), joint[0] - joint[1], rtol=1e-4, atol=1e-9)
    torch.testing.assert_close(res.token_attr.sum(1), torch.stack([
        log_probs(model, x, target).exp() for x in (ids, torch.zeros_like(ids))]).diff(dim=0)[0]
        .neg().detach(), rtol=1e-4, atol=1e-9)


def log_probs(model, ids: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """log p(target_t | ids + target[:t]) for each t, by a plain forward pass."""
    full = torch.cat([ids, target[:-1]])[None]
    logits = model(full).logits[0, len(ids) - 1:]
    return torch.log_softmax(logits, -1).gather(1, target[:, None])[:, 0]


@pytest.mark.parametrize("score", ["log_prob", "prob", "logit"])
def test_feature_ablation_by_hand(score):
    """Ablation of a span feature, recomputed with plain forward passes, for every score."""
    model, tok = gpt2(), word_tokenizer()
    ids, target = torch.tensor(tok(PROMPT)["input_ids"]), torch.tensor([5, 6, 7])
    res = fattr.llm.attribute(model, tok, PROMPT, target, method="feature_ablation",
                              features=[(1, 3), (5, 7)], baseline=2, score=score)
    assert res.input_tokens == ["the cat", "the mat"]

    def value(x):
        if score == "logit":
            full = torch.cat([x, target[:-1]])[None]
            logits = model(full).logits[0, len(x) - 1:]
            per_token = logits.gather(1, target[:, None])[:, 0]
            return torch.cat([per_token, per_token.sum()[None]])
        lp = log_probs(model, x, target)
        per = torch.cat([lp, lp.sum()[None]])
        return per.exp() if score == "prob" else per

    with torch.no_grad():
        full = value(ids)
        expected = []
        for start, end in [(1, 3), (5, 7)]:
            ablated = ids.clone()
            ablated[start:end] = 2
            expected.append(full - value(ablated))
    expected = torch.stack(expected, 1)
    torch.testing.assert_close(res.token_attr, expected[:3], rtol=1e-9, atol=1e-12)
    torch.testing.assert_close(res.seq_attr, expected[3], rtol=1e-9, atol=1e-12)


def test_contrastive_score_is_the_difference_of_two_targets():
    """IG is linear in the score: log p(target) - log p(foil) attributes as the difference."""
    model, tok = llama(), word_tokenizer()
    target, foil = torch.tensor([5, 6, 7]), 9
    contrast = fattr.llm.attribute(model, tok, PROMPT, target, steps=8,
                                   score=lambda lp: lp - lp[:, [foil]])
    plain = fattr.llm.attribute(model, tok, PROMPT, target, steps=8)
    foils = fattr.llm.attribute(model, tok, PROMPT, target, steps=8,
                                score=lambda lp: lp[:, foil])  # (T,): same prefix
    torch.testing.assert_close(contrast.token_attr, plain.token_attr - foils.token_attr,
                               rtol=1e-6, atol=1e-9)  # Llama's float32 RMSNorm


def test_per_position_callable_score():
    """A callable may return one score per position (T,): here the entropy."""
    model, tok = llama(), word_tokenizer()
    entropy = lambda lp: -(lp.exp() * lp).sum(-1)
    res = fattr.llm.attribute(model, tok, PROMPT, torch.tensor([5, 6]), method="feature_ablation",
                              score=entropy)
    ids = torch.tensor(tok(PROMPT)["input_ids"])
    with torch.no_grad():
        full = torch.cat([ids, torch.tensor([5])])[None]
        ablated = full.clone()
        ablated[0, 2] = 0
        drop = [entropy(torch.log_softmax(model(x).logits[0, -2:], -1)) for x in (full, ablated)]
    torch.testing.assert_close(res.token_attr[:, 2], drop[0] - drop[1], rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("method", ["feature_ablation", "integrated_gradients"])
def test_include_prefix_is_causal_and_keeps_the_prompt_columns(method):
    model, tok = llama(), word_tokenizer()
    target = torch.tensor([5, 6, 7, 8])
    kwargs = {"steps": 8} if method == "integrated_gradients" else {}
    res = fattr.llm.attribute(model, tok, PROMPT, target, method=method, include_prefix=True,
                              **kwargs)
    assert res.token_attr.shape == (4, 7 + 3)
    assert res.input_tokens[7:] == ["a", "cat", "dog"]
    prefix = res.token_attr[:, 7:]
    scale = res.token_attr.abs().max()  # token t never sees j >= t: zero up to rounding
    torch.testing.assert_close(prefix.triu(), torch.zeros_like(prefix), rtol=0,
                               atol=1e-6 * float(scale))
    assert prefix[torch.ones(4, 3).tril(-1).bool()].abs().min() > 0
    if method == "feature_ablation":  # ablating a prompt token does not depend on the prefix
        plain = fattr.llm.attribute(model, tok, PROMPT, target, method=method)
        torch.testing.assert_close(res.token_attr[:, :7], plain.token_attr, rtol=1e-9,
                                   atol=1e-12)


def test_integrated_gradients_completeness_over_the_prompt():
    """sum_i IG = score(prompt) - score(all baseline tokens), up to the quadrature error."""
    model, tok = gpt2(), word_tokenizer()
    ids, target = torch.tensor(tok(PROMPT)["input_ids"]), torch.tensor([5, 6, 7])
    res = fattr.llm.attribute(model, tok, PROMPT, target, steps=64)
    with torch.no_grad():
        gain = log_probs(model, ids, target) - log_probs(model, torch.zeros_like(ids), target)
    torch.testing.assert_close(res.token_attr.sum(1), gain, rtol=1e-4, atol=1e-6)


def test_word_and_segment_features():
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {w: i for i, w in enumerate(["[UNK]", "the", "cat", "##s", "sat", "mat", "##ted"])}
    backend = Tokenizer(models.WordPiece(vocab, unk_token="[UNK]"))
    backend.pre_tokenizer = pre_tokenizers.Whitespace()
    backend.decoder = decoders.WordPiece()
    tok = PreTrainedTokenizerFast(tokenizer_object=backend, unk_token="[UNK]")
    model = llama(vocab=7)
    text = "the cats matted"
    assert tok(text)["input_ids"] == [1, 2, 3, 5, 6]
    words = fattr.llm.attribute(model, tok, text, torch.tensor([4]), method="feature_ablation",
                                features="words")
    assert words.input_tokens == ["the", "cats", "matted"]
    spans = fattr.llm.attribute(model, tok, text, torch.tensor([4]), method="feature_ablation",
                                features=[(0, 1), (1, 3), (3, 5)])
    torch.testing.assert_close(words.token_attr, spans.token_attr, rtol=0, atol=0)
    segments = fattr.llm.attribute(model, tok, text, torch.tensor([4]),
                                   method="feature_ablation", features=["the cats", " matted"])
    torch.testing.assert_close(segments.token_attr[0, 1], spans.token_attr[0, 2])
    assert segments.input_tokens == ["the cats", "matted"]


def test_ids_without_tokenizer():
    model = llama()
    res = fattr.llm.attribute(model, None, torch.tensor([1, 4, 6]), torch.tensor([5, 9]),
                              method="input_x_gradient")
    assert res.input_tokens == ["1", "4", "6"] and res.output_tokens == ["5", "9"]


def test_html_escapes_tokens_and_plot_draws():
    model, tok = llama(), word_tokenizer()
    res = fattr.llm.attribute(model, tok, "tom & the <b> cat", torch.tensor([23, 5]),
                              method="feature_ablation")
    page = res.to_html()
    assert "&lt;b&gt;" in page and "&amp;" in page and "<b>" not in page
    assert page.count("<tr>") == 1 + 2 + 1  # header, two target tokens, the sequence
    fig = res.plot()
    assert len(fig.axes) == 2  # the heatmap and its colour bar
    import matplotlib.pyplot as plt
    plt.close(fig)


def test_the_model_is_left_unchanged():
    model, tok = llama(), word_tokenizer()
    before = state_snapshot(model)
    configs = model.config.to_dict(), model.generation_config.to_dict()
    fattr.llm.attribute(model, tok, PROMPT, torch.tensor([5, 6]), steps=4)
    fattr.llm.attribute(model, tok, [PROMPT, "a dog"], max_new_tokens=2)
    fattr.llm.attribute(model, tok, PROMPT, method="shapley_value_sampling", samples=2,
                        max_new_tokens=2)
    with pytest.raises(fattr.FattrError):
        fattr.llm.attribute(model, tok, PROMPT, torch.tensor([5, 99]))
    assert_unchanged(model, before)
    assert configs == (model.config.to_dict(), model.generation_config.to_dict())


PROMPTS = ["the cat sat on the mat", "a dog ran", "it was very big and small"]
TARGETS = [torch.tensor([5, 6, 7]), torch.tensor([9]), torch.tensor([10, 11, 12, 13, 14])]


@pytest.mark.parametrize("build", [llama, gpt2])
@pytest.mark.parametrize("method", ["integrated_gradients", "feature_ablation"])
def test_a_batch_of_prompts_equals_one_by_one(build, method):
    """Prompts of 7, 4 and 7 tokens, targets of 3, 1 and 5: one padded batch (left-padded
    prompts, right-padded targets, attention masks and position ids) equals single calls."""
    model, tok = build(), word_tokenizer()
    kwargs = {"steps": 6} if method == "integrated_gradients" else {}
    many = fattr.llm.attribute(model, tok, PROMPTS, TARGETS, method=method, **kwargs)
    assert len(many) == 3
    for prompt, target, res in zip(PROMPTS, TARGETS, many):
        one = fattr.llm.attribute(model, tok, prompt, target, method=method, **kwargs)
        assert res.input_tokens == one.input_tokens and res.output_tokens == one.output_tokens
        torch.testing.assert_close(res.token_attr, one.token_attr, rtol=1e-9, atol=1e-12)
        torch.testing.assert_close(res.seq_attr, one.seq_attr, rtol=1e-9, atol=1e-12)


def test_a_batch_generates_what_single_prompts_generate():
    model, tok = llama(seed=1), word_tokenizer()
    many = fattr.llm.attribute(model, tok, PROMPTS, method="feature_ablation", max_new_tokens=4)
    for prompt, res in zip(PROMPTS, many):
        ids = torch.tensor([tok(prompt)["input_ids"]])
        expected = model.generate(ids, do_sample=False, max_new_tokens=4)[0, ids.shape[1]:]
        assert res.output_tokens == [tok.decode([i]) for i in expected.tolist()]
