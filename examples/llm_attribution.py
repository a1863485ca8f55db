"""Which prompt tokens made a language model say each word: `fattr.llm.attribute`.

A small Llama and a small GPT-2 are built from configs (random weights, float64) with a
word-level tokenizer made with the `tokenizers` package, so nothing is downloaded; with random
weights the maps show the mechanics, not language. For each model the continuation of the
prompt is generated greedily (as `model.generate(do_sample=False)`), then all T generated
tokens are attributed in one teacher-forced pass:
- Llama, integrated gradients on the input embeddings: the T backward passes run as one vmap
  after ONE forward pass over the path; completeness: each row sums to
  log p(token | prompt) - log p(token | baseline prompt), up to the quadrature error.
- GPT-2, feature ablation over the words: every perturbed forward pass scores all T tokens.

Run: .venv/bin/python examples/llm_attribution.py   (writes out/examples/llm.png, llm.html)
"""

from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt
import torch
import transformers as hf
from tokenizers import Tokenizer, models, pre_tokenizers

import fattr

OUT = Path("out/examples")
WORDS = "[UNK] <s> </s> the a cat dog sat on mat ran to park and was big".split()
PROMPT = "the cat sat on the mat and the dog"


def tokenizer() -> hf.PreTrainedTokenizerFast:
    backend = Tokenizer(models.WordLevel({w: i for i, w in enumerate(WORDS)}, "[UNK]"))
    backend.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    return hf.PreTrainedTokenizerFast(tokenizer_object=backend, unk_token="[UNK]",
                                   bos_token="<s>", eos_token="</s>")


def models_from_configs(seed: int = 0) -> dict[str, torch.nn.Module]:
    ids = dict(vocab_size=len(WORDS), bos_token_id=1, eos_token_id=2, pad_token_id=0)
    torch.manual_seed(seed)
    llama = hf.LlamaForCausalLM(hf.LlamaConfig(hidden_size=32, intermediate_size=64,
                                               num_hidden_layers=2, num_attention_heads=4, **ids))
    gpt2 = hf.GPT2LMHeadModel(hf.GPT2Config(n_embd=32, n_layer=2, n_head=4, **ids))
    return {"Llama": llama.double().eval(), "GPT-2": gpt2.double().eval()}


def log_probs(model, prompt: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    logits = model(torch.cat([prompt, target[:-1]])[None]).logits[0, len(prompt) - 1:]
    return torch.log_softmax(logits, -1).gather(1, target[:, None])[:, 0]


def main(max_new_tokens: int = 6, steps: int = 256, out: Path = OUT) -> dict:
    tok, lms = tokenizer(), models_from_configs()
    ig = fattr.llm.attribute(lms["Llama"], tok, PROMPT, method="integrated_gradients",
                             steps=steps, max_new_tokens=max_new_tokens)
    ablation = fattr.llm.attribute(lms["GPT-2"], tok, PROMPT, method="feature_ablation",
                                   features="words", max_new_tokens=max_new_tokens)
    prompt = torch.tensor(tok(PROMPT)["input_ids"])
    target = torch.tensor(tok.convert_tokens_to_ids(ig.output_tokens))
    with torch.no_grad():  # completeness of IG, per generated token
        rise = log_probs(lms["Llama"], prompt, target) - \
            log_probs(lms["Llama"], torch.zeros_like(prompt), target)
    gap = ig.token_attr.sum(1) - rise
    print(f"prompt: {PROMPT!r}")
    for name, res in (("Llama, IG", ig), ("GPT-2, ablation", ablation)):
        print(f"{name}: continuation {' '.join(res.output_tokens)!r}; most important input "
              f"per token: {[res.input_tokens[i] for i in res.token_attr.argmax(1).tolist()]}")
    print(f"IG completeness gap per token: {[f'{g:.1e}' for g in gap.tolist()]}")

    fig, axes = plt.subplots(1, 2, figsize=(11, 3.6))
    for ax, res, title in zip(axes, (ig, ablation), ("Llama: integrated gradients",
                                                     "GPT-2: feature ablation (words)")):
        res.plot(ax=ax)
        ax.set_title(title, fontsize=9)
    path = fattr.viz.save(fig, Path(out) / "llm.png")
    page = Path(out) / "llm.html"
    page.write_text(ig.to_html() + ablation.to_html())
    print(f"wrote {path} and {page}")
    return {"ig": ig, "ablation": ablation, "gap": gap, "rise": rise, "figure": path,
            "html": page}


if __name__ == "__main__":
    main()
