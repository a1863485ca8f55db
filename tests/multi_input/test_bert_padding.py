"""A HuggingFace BERT classifier with a padded batch: the attention mask is a per-example
model keyword that follows its example through every path point and chunk."""

from __future__ import annotations

import captum.attr as ca
import pytest
import torch

import fattr

transformers = pytest.importorskip("transformers")  # a test extra; absent only in slim installs


@pytest.fixture(scope="module")
def bert():
    config = transformers.BertConfig(vocab_size=50, hidden_size=16, num_hidden_layers=2,
                                     num_attention_heads=2, intermediate_size=32,
                                     max_position_embeddings=16, num_labels=3)
    torch.manual_seed(0)
    model = transformers.BertForSequenceClassification(config).double().eval()
    lengths = [7, 4, 6]
    ids = torch.zeros(3, 7, dtype=torch.long)  # pad id 0
    g = torch.Generator().manual_seed(1)
    for b, n in enumerate(lengths):
        ids[b, :n] = torch.randint(1, 50, (n,), generator=g)
    mask = (ids != 0).long()
    return model, ids, mask, lengths


def test_layer_ig_on_word_embeddings_with_attention_mask(bert):
    model, ids, mask, lengths = bert
    f, params = fattr.functional(model)
    layer = "bert.embeddings.word_embeddings"
    target = torch.tensor([0, 2, 1])
    for batch_size in (None, 8):
        lig = fattr.layer_integrated_gradients(f, layer, steps=8, batch_size=batch_size,
                                               output=lambda o: o.logits)
        ours = lig(params, ids, target, model_kwargs={"attention_mask": mask})
        forward = lambda i, m: model(i, attention_mask=m).logits
        theirs = ca.LayerIntegratedGradients(forward, model.bert.embeddings.word_embeddings) \
            .attribute(ids, target=target, n_steps=8, additional_forward_args=(mask,),
                       internal_batch_size=batch_size)
        torch.testing.assert_close(ours, theirs, rtol=1e-6, atol=1e-9)
    for b, n in enumerate(lengths):  # real tokens: as the example alone, without padding
        alone = lig(params, ids[b:b + 1, :n], target[b:b + 1])
        torch.testing.assert_close(ours[b, :n], alone[0], rtol=1e-6, atol=1e-9)
    assert ours[1, lengths[1]:].abs().max() < 1e-12  # padding: baseline = input = id 0


def test_without_the_mask_padding_changes_the_real_tokens(bert):
    """The check above can fail: without the mask, padded examples differ from alone."""
    model, ids, _, lengths = bert
    f, params = fattr.functional(model)
    lig = fattr.layer_integrated_gradients(f, "bert.embeddings.word_embeddings", steps=8,
                                           output=lambda o: o.logits)
    unmasked = lig(params, ids, torch.tensor([0, 2, 1]))
    alone = lig(params, ids[1:2, :lengths[1]], torch.tensor([2]))
    difference = (unmasked[1, :lengths[1]] - alone[0]).abs().max() / alone.abs().max()
    assert difference > 1e-3  # the masked run above agrees to 1e-6
