"""AttnLRP and CP-LRP on a HuggingFace Llama against a plain Gradient x Input and lxt, one
process, same inputs.

A LlamaForCausalLM from a config (4 layers, hidden 256, MLP 688, 8 query and 4 key/value
heads, vocabulary 1000; random weights, float32), batch 4 of 128 input embeddings, the logit of
one token at the last position explained. The model is a function of its input embeddings
(`Embeds`, the wrapper `fattr.llm` uses). fattr runs `fattr.lrp(f, "attnlrp")` and `"cp_lrp"`
(one forward and one backward), next to `fattr.input_x_gradient(f)` (the reference: one plain
gradient) on the same SDPA model, and on an eager-attention copy next to lxt's rules
(`lrp_llama_lxt`: lxt 2.1's `rms_norm_forward`, `gated_mlp_forward` and
`wrap_attention_forward` applied to transformers' classes around each call and always removed;
lxt's own `monkey_patch` fails with transformers 5). One thread.

    .venv/bin/python benchmarks/bench_lrp_llama.py
"""

from __future__ import annotations

import sys
import warnings
from pathlib import Path

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import fattr
from benchmarks.harness import compare, markdown
from tests.lrp import lxt_reference


class Embeds(nn.Module):
    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, embeds: torch.Tensor) -> torch.Tensor:
        return self.model(inputs_embeds=embeds).logits


def llama(impl: str, layers: int = 4, hidden: int = 256) -> Embeds:
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    config = LlamaConfig(hidden_size=hidden, intermediate_size=688, num_hidden_layers=layers,
                         num_attention_heads=8, num_key_value_heads=4, vocab_size=1000,
                         attn_implementation=impl)
    return Embeds(LlamaForCausalLM(config).eval())


def table(batch: int = 4, length: int = 128, rounds: int = 7) -> str:
    from transformers.models.llama import modeling_llama

    sdpa, eager = llama("sdpa"), llama("eager")
    f, params = fattr.functional(sdpa)
    g, _ = fattr.functional(eager)
    x = torch.randn(batch, length, 256, generator=torch.Generator().manual_seed(1))

    def target(out: torch.Tensor) -> torch.Tensor:
        return out[:, -1, 7]

    gxi, attn, cp = (fattr.input_x_gradient(f), fattr.lrp(f, "attnlrp"), fattr.lrp(f, "cp_lrp"))
    attn_eager = fattr.lrp(g, "attnlrp")

    def lxt() -> torch.Tensor:
        patches = lxt_reference.gated_decoder(modeling_llama, "Llama", cp=False)
        return lxt_reference.relevance(eager, x, target, patches)

    fns = {"plain gradient x input (fattr)": lambda: gxi(params, x, target),
           "fattr attnlrp": lambda: attn(params, x, target),
           "fattr cp_lrp": lambda: cp(params, x, target),
           "fattr attnlrp (eager attention)": lambda: attn_eager(params, x, target),
           "lxt AttnLRP (eager attention)": lxt}
    theirs, ours = lxt(), attn_eager(params, x, target)
    error = float((ours - theirs).abs().max() / theirs.abs().max())
    rows = compare(fns, reference="plain gradient x input (fattr)", rounds=rounds, warmup=2)
    title = (f"Llama (4 layers, hidden 256, GQA 8/4 heads), batch {batch} x {length} tokens, "
             "float32, one thread: time and peak memory relative to a plain Gradient x Input")
    return (markdown(rows, title) + "\n\nfattr attnlrp vs lxt AttnLRP (eager), float32, max "
            f"relative difference: {error:.1e} (lxt's RMSNorm computes in float32, fattr's in "
            "the input's precision; lxt's identity rule divides by x + 1e-10)")


def main() -> str:
    warnings.filterwarnings("ignore")
    torch.set_num_threads(1)
    from transformers import logging

    logging.set_verbosity_error()
    return table()


if __name__ == "__main__":
    print(main())
