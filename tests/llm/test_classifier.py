"""Encoder classifiers (BERT-style, logits (B, C)) through the same call and result type: the
class is the one target "token"."""

from __future__ import annotations

import captum.attr as ca
import pytest
import torch
from transformers import BertConfig, BertForSequenceClassification

import fattr
from tests.llm.models import rel_err

LABELS = {0: "negative", 1: "neutral", 2: "positive"}
IDS = torch.tensor([2, 5, 7, 9, 11, 3])


@pytest.fixture(scope="module")
def bert():
    torch.manual_seed(0)
    config = BertConfig(vocab_size=30, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                        intermediate_size=64, num_labels=3, id2label=LABELS,
                        label2id={v: k for k, v in LABELS.items()})
    return BertForSequenceClassification(config).double().eval()


def test_integrated_gradients_equal_captum_layer_ig(bert):
    ours = fattr.llm.attribute(bert, None, IDS, "positive", steps=16)
    assert ours.output_tokens == ["positive"] and ours.token_attr.shape == (1, 6)
    log_probs = lambda ids: torch.log_softmax(bert(ids).logits, -1)
    peer = ca.LayerIntegratedGradients(log_probs, bert.bert.embeddings.word_embeddings)
    theirs = peer.attribute(IDS[None], baselines=torch.zeros_like(IDS[None]), target=2,
                            n_steps=16).sum(-1)
    assert rel_err(ours.token_attr, theirs) <= 1e-6
    torch.testing.assert_close(ours.seq_attr, ours.token_attr[0])


def test_predicted_class_and_a_padded_batch(bert):
    """Prompts of 6 and 4 tokens, padded on the right (BERT's pooler reads position 0)."""
    prompts = [IDS, IDS[:4]]
    with torch.no_grad():
        predicted = [LABELS[int(bert(p[None]).logits.argmax())] for p in prompts]
    for method, kwargs in (("feature_ablation", {}), ("integrated_gradients", {"steps": 8})):
        many = fattr.llm.attribute(bert, None, prompts, method=method, **kwargs)
        for prompt, label, res in zip(prompts, predicted, many):
            assert res.output_tokens == [label]
            one = fattr.llm.attribute(bert, None, prompt, method=method, **kwargs)
            torch.testing.assert_close(res.token_attr, one.token_attr, rtol=1e-9, atol=1e-12)


def test_bad_class(bert):
    with pytest.raises(fattr.FattrError, match=r"the model is a classifier of 3 classes; target "
                       r"must be a class id in 0..2, one of its labels \['negative', 'neutral', "
                       r"'positive'\] or None \(the predicted class\), got 'happy'"):
        fattr.llm.attribute(bert, None, IDS, "happy")
