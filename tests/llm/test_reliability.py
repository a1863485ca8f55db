"""Bad input to fattr.llm.attribute gets an error that names the argument and the fix."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import fattr
from tests.llm.models import VOCAB, llama, word_tokenizer

PROMPT = "the cat sat"


@pytest.fixture(scope="module")
def lm():
    return llama(), word_tokenizer()


def raises(lm, match, prompt=PROMPT, target=torch.tensor([5]), error=fattr.FattrError, **kw):
    model, tok = lm
    with pytest.raises(error, match=match):
        fattr.llm.attribute(model, tok, prompt, target, **kw)


def test_unknown_method(lm):
    raises(lm, r"^fattr.llm.attribute: unknown method 'occlusion'; choose one of "
               r"saliency, input_x_gradient, integrated_gradients", method="occlusion")


@pytest.mark.parametrize("value", [0, -1, 2.5, True])
def test_max_new_tokens_below_one(lm, value):
    raises(lm, r"max_new_tokens must be an int >= 1, got", target=None, max_new_tokens=value)


@pytest.mark.parametrize("prompt, match", [
    ("", r"the prompt is an empty string; there is nothing to attribute to"),
    (torch.tensor([], dtype=torch.long), r"the prompt has no tokens"),
    ([], r"the prompt has no tokens; pass at least one token id"),
    ({"ids": 1}, r"prompt must be a string \(with a tokenizer\) or a 1-D tensor of token ids"),
])
def test_empty_prompt(lm, prompt, match):
    raises(lm, match, prompt=prompt)


@pytest.mark.parametrize("where", ["prompt", "target"])
@pytest.mark.parametrize("bad", [VOCAB, -1])
def test_ids_outside_the_vocabulary(lm, where, bad):
    ids = torch.tensor([1, bad, 4])
    kwargs = {"prompt": ids} if where == "prompt" else {"target": ids}
    raises(lm, rf"the {where} holds the token id {bad}, outside the model's vocabulary of "
               rf"{VOCAB} ids \(0..{VOCAB - 1}\)", **kwargs)


def test_float_ids_and_matrices(lm):
    raises(lm, r"prompt must hold integer token ids, got dtype torch.float32",
           prompt=torch.tensor([1.0, 2.0]))
    raises(lm, r"prompt must be a 1-D tensor of token ids \(L,\), got shape \(2, 3\); pass "
               "several prompts as a list", prompt=torch.ones(2, 3, dtype=torch.long))


class Bare(nn.Module):
    def forward(self, input_ids):
        return torch.zeros(*input_ids.shape, 5)


class Unhandled(nn.Module):
    def get_input_embeddings(self):  # as transformers' PreTrainedModel base class does
        raise NotImplementedError


@pytest.mark.parametrize("model", [Bare(), Unhandled()])
def test_model_without_input_embeddings(model):
    with pytest.raises(fattr.FattrTypeError, match=r"has no input embeddings: "
                       r"model.get_input_embeddings\(\) must return the token embedding"):
        fattr.llm.attribute(model.eval(), None, torch.tensor([1, 2]), torch.tensor([3]))


def test_not_a_module():
    with pytest.raises(fattr.FattrTypeError, match=r"model must be a torch.nn.Module"):
        fattr.llm.attribute(lambda ids: ids, None, torch.tensor([1, 2]), torch.tensor([3]))


def test_training_mode():
    model = llama().train()
    with pytest.raises(fattr.FattrError, match=r"the model is in training mode "
                       r"\('LlamaForCausalLM' and 32 more modules\), so dropout would make the "
                       r"attributions random. Call model.eval\(\)"):
        fattr.llm.attribute(model, None, torch.tensor([1, 2]), torch.tensor([3]))


def test_strings_need_a_tokenizer(lm):
    model, _ = lm
    with pytest.raises(fattr.FattrTypeError, match=r"the prompt is a string but tokenizer is "
                       "None"):
        fattr.llm.attribute(model, None, PROMPT, torch.tensor([3]))
    with pytest.raises(fattr.FattrTypeError, match=r"the target is a string but tokenizer is "
                       "None"):
        fattr.llm.attribute(model, None, torch.tensor([1, 4]), "cat")


def test_unknown_method_argument(lm):
    raises(lm, r"method 'integrated_gradients' takes no argument 'samples'; its arguments are "
               r"batch_size, complete, quadrature, steps", error=fattr.FattrTypeError, samples=3)
    raises(lm, r"method 'feature_ablation' takes no argument 'steps'",
           error=fattr.FattrTypeError, method="feature_ablation", steps=3)


@pytest.mark.parametrize("score, match", [
    ("probability", r"unknown score 'probability'; choose one of log_prob, prob, logit"),
    (3, r"score must be one of log_prob, prob, logit or a callable"),
    (lambda lp: lp.sum(), r"a callable score gets the \(T, V\) = \(1, 26\) log-probs .* got \(\)"),
])
def test_bad_score(lm, score, match):
    raises(lm, match, score=score)


@pytest.mark.parametrize("features, match", [
    ("tokens", r"features must be None, 'words', a list of \(start, end\) token spans"),
    ([(0, 9)], r"feature span \(0, 9\) is empty or outside the prompt of 4 tokens"),
    ([(0, 2), (1, 3)], r"feature span \(1, 3\) overlaps an earlier span"),
    ([(0, 2.5)], r"feature 0 is \(0, 2.5\); a token span is a pair of ints"),
    (["the cat", " sits"], r"the text segments .* must concatenate to the prompt"),
])
def test_bad_features(lm, features, match):
    raises(lm, match, features=features, method="feature_ablation")


def test_words_need_text(lm):
    raises(lm, r"features='words' need the prompt as text and a fast HuggingFace tokenizer",
           prompt=torch.tensor([1, 4, 6]), features="words")


@pytest.mark.parametrize("baseline, match", [
    (VOCAB, rf"baseline token id {VOCAB} is outside the vocabulary"),
    (torch.zeros(5), r"baseline must be a token id or an embedding of shape \(32,\); got \(5,\)"),
    ("pad", r"baseline must be a token id or an embedding of shape \(32,\); got str"),
])
def test_bad_baseline(lm, baseline, match):
    raises(lm, match, baseline=baseline)


def test_bad_options(lm):
    raises(lm, r"include_prefix must be True or False", error=fattr.FattrTypeError,
           include_prefix="yes")
    raises(lm, r"target_chunk must be an int >= 1, got 0", target_chunk=0)
    raises(lm, r"batch_size does nothing for fattr.saliency", method="saliency", batch_size=4)


def test_list_of_prompts_needs_a_list_of_targets(lm):
    raises(lm, r"with a list of 2 prompts, target must be None or a list with one target per "
               "prompt", prompt=[PROMPT, PROMPT], target=torch.tensor([5]))
