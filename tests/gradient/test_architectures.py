"""Real architectures: torchvision resnet18 and a tiny HuggingFace BERT built from a config."""

from __future__ import annotations

import pytest
import torch
import transformers
from torch.func import vmap

import fattr
from tests.conftest import resnet18


def test_resnet18_inplace_relu_and_residual_adds():
    net = resnet18()
    f, params = fattr.functional(net)
    x = torch.randn(2, 3, 32, 32)
    target = torch.tensor([3, 8])
    ig = fattr.integrated_gradients(f, steps=64, batch_size=48)(params, x, target)
    gap = fattr.completeness_gap(f, params, x, ig, target)
    scale = (net(x).gather(1, target[:, None]).squeeze(1) - net(torch.zeros_like(x))[:, 3]).abs()
    assert (gap.abs() <= 0.02 * scale.max() + 1e-5).all()
    sal = fattr.saliency(f, abs=False)
    per_target = vmap(sal, in_dims=(None, None, 0))(params, x, torch.tensor([[0, 1], [2, 3]]))
    torch.testing.assert_close(per_target[1], sal(params, x, torch.tensor([2, 3])))


@pytest.fixture(scope="module")
def bert():
    torch.manual_seed(0)
    config = transformers.BertConfig(vocab_size=60, hidden_size=16, num_hidden_layers=2,
                                     num_attention_heads=2, intermediate_size=32, num_labels=3,
                                     max_position_embeddings=16)
    model = transformers.BertForSequenceClassification(config).eval()
    _, params = fattr.functional(model)

    def f(p, embeddings):
        return torch.func.functional_call(model, p, (), {"inputs_embeds": embeddings})

    ids = torch.randint(0, 60, (2, 7))
    embeddings = model.bert.embeddings.word_embeddings(ids).detach()
    return model, f, params, embeddings


def test_bert_inputs_embeds_with_output_selector(bert):
    _model, f, params, embeddings = bert
    logits = lambda o: o.logits
    target = torch.tensor([0, 2])
    ig = fattr.integrated_gradients(f, steps=32, output=logits)(params, embeddings, target)
    assert ig.shape == embeddings.shape
    gap = fattr.completeness_gap(f, params, embeddings, ig, target, output=logits)
    assert gap.abs().max() < 1e-3
    # per-token attribution agrees with the batched call when mapped per example
    per_example = fattr.integrated_gradients(fattr.per_example(f), steps=32, output=logits)
    mapped = vmap(per_example, in_dims=(None, 0, 0))(params, embeddings, target)
    torch.testing.assert_close(mapped, ig, rtol=1e-4, atol=1e-6)


def test_bert_without_output_selector_is_a_clear_error(bert):
    _, f, params, embeddings = bert
    with pytest.raises(fattr.FattrError, match="returned SequenceClassifierOutput, not a tensor"):
        fattr.saliency(f)(params, embeddings, 0)
