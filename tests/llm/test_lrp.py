"""`fattr.llm.attribute(..., method="lrp")`: AttnLRP / CP-LRP of every generated token's logit
in one pass (vmap over the tokens), through fattr.lrp on the input embeddings."""

from __future__ import annotations

import pytest
import torch

import fattr
from tests.llm.models import llama


@pytest.fixture(scope="module")
def case():
    model = llama(hidden=32).double().eval()
    g = torch.Generator().manual_seed(3)
    prompt = torch.randint(1, 26, (6,), generator=g)
    target = torch.randint(1, 26, (4,), generator=g)
    return model, prompt, target


class LogitAt(torch.nn.Module):
    """inputs_embeds -> the logit of one token at one position (a hand-made reference)."""

    def __init__(self, model: torch.nn.Module, position: int, token: int):
        super().__init__()
        self.model, self.position, self.token = model, position, token

    def forward(self, embeds: torch.Tensor) -> torch.Tensor:
        return self.model(inputs_embeds=embeds, use_cache=False).logits[:, self.position,
                                                                         self.token]


@pytest.mark.parametrize("composite", ["attnlrp", "cp_lrp"])
def test_each_token_row_equals_its_own_lrp_call(case, composite):
    model, prompt, target = case
    result = fattr.llm.attribute(model, None, prompt, target, method="lrp", composite=composite)
    full = torch.cat([prompt, target[:-1]])[None]
    embeds = model.get_input_embeddings()(full).detach()
    for t in range(len(target)):
        f, params = fattr.functional(LogitAt(model, len(prompt) - 1 + t, int(target[t])))
        relevance = fattr.lrp(f, composite)(params, embeds)
        torch.testing.assert_close(result.token_attr[t],
                                   relevance[0, :len(prompt)].sum(-1), rtol=1e-9, atol=1e-12)


def test_cp_lrp_conserves_the_logit_over_prompt_and_prefix(case):
    """A Llama has no biases: CP-LRP's relevance over the prompt and the generated prefix sums
    to the explained logit of each token."""
    model, prompt, target = case
    result = fattr.llm.attribute(model, None, prompt, target, method="lrp", composite="cp_lrp",
                                 include_prefix=True)
    full = torch.cat([prompt, target[:-1]])[None]
    embeds = model.get_input_embeddings()(full).detach()
    expected = []  # the logit as the LRP model computes it (HF's RMSNorm runs in float32 even
    for t in range(len(target)):  # in float64 models; fattr's keeps the input's precision)
        f, params = fattr.functional(LogitAt(model, len(prompt) - 1 + t, int(target[t])))
        expected.append(fattr.lrp.model(f, "cp_lrp")(params, embeds)[0])
    torch.testing.assert_close(result.token_attr.sum(1), torch.stack(expected).detach(),
                               rtol=1e-8, atol=1e-12)


def test_lrp_explains_the_logit_only(case):
    model, prompt, target = case
    with pytest.raises(fattr.FattrError, match="'lrp' explains the logit.*score='prob'"):
        fattr.llm.attribute(model, None, prompt, target, method="lrp", score="prob")
