"""fattr.llm.attribute against captum's LLM wrappers, in one process, on the same inputs.

Small random Llamas (float32, one intra-op thread), a 16-token prompt, T = 8 and T = 32 target
tokens. Integrated gradients with 16 Gauss-Legendre steps: captum's LLMGradientAttribution runs
one LayerIntegratedGradients per target token on the growing prefix; fattr teacher-forces once
and takes the T backward passes as one vmap. Also measured, for fattr's choice of how to run
that vmapped backward: attention written as matmuls (instead of PyTorch's fused SDPA, whose CPU
backward has no vmap batching rule, so torch loops over T for that op), and one forward pass
followed by a loop of T `autograd.grad(retain_graph=True)` calls. Feature ablation over the 16
prompt tokens: captum's LLMAttribution, token by token (its default; with
`use_cached_outputs=False`, see tests/llm/test_captum_parity.py) and with
`forward_in_tokens=False` (one pass per perturbation); fattr: all perturbations in one batch.

    .venv/bin/python benchmarks/bench_llm.py
"""

from __future__ import annotations

import sys
from pathlib import Path
from unittest import mock

import captum.attr as ca
import numpy as np
import torch
import torch.nn.functional as F
from torch.overrides import TorchFunctionMode
from transformers import LlamaConfig, LlamaForCausalLM

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import fattr
from benchmarks.harness import median_times, peak_memory

STEPS = 16


def small_llama(hidden: int, vocab: int) -> LlamaForCausalLM:
    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=vocab, hidden_size=hidden, intermediate_size=2 * hidden,
                         num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                         max_position_embeddings=256)
    return LlamaForCausalLM(config).eval()


class MatmulAttention(TorchFunctionMode):
    """F.scaled_dot_product_attention as softmax(q k^T * scale + mask) v (no dropout)."""

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func is not F.scaled_dot_product_attention:
            return func(*args, **kwargs)
        q, k, v = args[:3]
        if kwargs.get("enable_gqa") and k.shape[-3] != q.shape[-3]:
            k = k.repeat_interleave(q.shape[-3] // k.shape[-3], -3)
            v = v.repeat_interleave(q.shape[-3] // v.shape[-3], -3)
        scale = kwargs.get("scale") or q.shape[-1] ** -0.5
        scores = (q * scale) @ k.transpose(-2, -1)
        mask = kwargs.get("attn_mask")
        if kwargs.get("is_causal"):
            mask = torch.ones(scores.shape[-2:], dtype=torch.bool).tril()
        if mask is not None:
            scores = scores.masked_fill(~mask, torch.finfo(scores.dtype).min) \
                if mask.dtype == torch.bool else scores + mask
        return torch.softmax(scores, -1) @ v


def retain_graph_loop(model, prompt: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """IG by one forward pass over all path points and T backward passes (retain_graph)."""
    embed = model.get_input_embeddings()
    full = torch.cat([prompt, target[:-1]])[None]
    with torch.no_grad():
        end = embed(full)
        start = torch.where(torch.arange(full.shape[1])[:, None] < len(prompt),
                            embed(torch.zeros_like(full)), end)
    nodes, weights = np.polynomial.legendre.leggauss(STEPS)
    alphas = torch.tensor(0.5 * (nodes + 1), dtype=end.dtype)[:, None, None]
    points = (start + alphas * (end - start)).requires_grad_(True)
    steps = len(target)
    logits = model(inputs_embeds=points, logits_to_keep=steps).logits
    chosen = torch.log_softmax(logits, -1)[:, torch.arange(steps), target]
    weight = torch.tensor(0.5 * weights, dtype=end.dtype)[:, None, None]
    rows = [(torch.autograd.grad(chosen[:, t].sum(), points, retain_graph=True)[0] * weight)
            .sum(0) for t in range(steps)]
    return (torch.stack(rows) * (end - start)[0]).sum(-1)[:, :len(prompt)]


def passes(model, fn) -> tuple[int, int]:
    """(forward passes, rows through them) during fn(), counted at the decoder stack
    `model.model` (captum's LLMAttribution calls `model.forward` directly, past any hook on
    the model itself)."""
    rows: list[int] = []

    def hook(module, args, kwargs, out):
        x = kwargs.get("inputs_embeds")
        x = kwargs.get("input_ids") if x is None else x
        rows.append((args[0] if x is None else x).shape[0])

    handle = model.model.register_forward_hook(hook, with_kwargs=True)
    try:
        fn()
    finally:
        handle.remove()
    return len(rows), sum(rows)


def token_input(prompt: torch.Tensor) -> ca.TextTokenInput:
    """captum's TextTokenInput for ids without a tokenizer (baseline id 0)."""
    inp = ca.TextTokenInput.__new__(ca.TextTokenInput)
    inp.inp_tensor = inp.itp_tensor = prompt[None]
    inp.itp_mask, inp.baselines, inp.n_itp_features = None, 0, prompt.shape[0]
    inp.values = [str(i) for i in prompt.tolist()]
    return inp


def close(a: torch.Tensor, b: torch.Tensor) -> None:
    assert float((a - b).abs().max() / a.abs().max()) < 1e-3, "results differ"  # float32


def gradient_row(model, prompt, target, rounds) -> tuple[str, float]:
    peer = ca.LLMGradientAttribution(
        ca.LayerIntegratedGradients(model, model.get_input_embeddings()), None)
    theirs = lambda: peer.attribute(token_input(prompt), target=target, n_steps=STEPS)
    ours = lambda: fattr.llm.attribute(model, None, prompt, target, steps=STEPS)

    def matmul():
        with MatmulAttention():
            return ours()

    loop = lambda: retain_graph_loop(model, prompt, target)
    reference = theirs().token_attr
    for other in (ours().token_attr, matmul().token_attr, loop()):
        close(reference, other)
    times = median_times({"captum": theirs, "fattr": ours, "matmul": matmul, "loop": loop},
                         rounds=rounds, warmup=1)
    calls = {"captum": passes(model, theirs), "fattr": passes(model, ours)}
    peaks = {"captum": peak_memory(theirs), "fattr": peak_memory(ours)}
    line = (f"| {len(target)} | {times['captum']:.3f} | {times['fattr']:.3f} | "
            f"{times['captum'] / times['fattr']:.1f} | {times['matmul']:.3f} | "
            f"{times['loop']:.3f} | {calls['captum'][0]} ({calls['captum'][1]}) | "
            f"{calls['fattr'][0]} ({calls['fattr'][1]}) | "
            f"{peaks['captum'] / 2**20:.0f} / {peaks['fattr'] / 2**20:.0f} |")
    return line, times["fattr"]


def ablation_row(model, prompt, target, rounds) -> str:
    peer = ca.LLMAttribution(ca.FeatureAblation(model), None)
    tokens = lambda: peer.attribute(token_input(prompt), target=target, use_cached_outputs=False)
    one_pass = lambda: peer.attribute(token_input(prompt), target=target,
                                      forward_in_tokens=False)
    ours = lambda: fattr.llm.attribute(model, None, prompt, target, method="feature_ablation")
    close(one_pass().token_attr, ours().token_attr)
    times = median_times({"tokens": tokens, "one_pass": one_pass, "fattr": ours},
                         rounds=rounds, warmup=1)
    calls = [passes(model, fn) for fn in (tokens, one_pass, ours)]
    return (f"| {len(target)} | {times['tokens']:.3f} | {times['one_pass']:.3f} | "
            f"{times['fattr']:.3f} | {times['tokens'] / times['fattr']:.0f} | "
            f"{times['one_pass'] / times['fattr']:.1f} | "
            + " | ".join(f"{c} ({r})" for c, r in calls) + " |")


def table(hidden: int, vocab: int, prompt_len: int = 16, rounds: int = 5) -> str:
    model = small_llama(hidden, vocab)
    g = torch.Generator().manual_seed(1)
    prompt = torch.randint(1, vocab, (prompt_len,), generator=g)
    title = (f"Llama, hidden {hidden}, 2 layers, vocab {vocab}, prompt {prompt_len} tokens, "
             "float32, 1 thread")
    targets = {steps: torch.randint(1, vocab, (steps,), generator=g) for steps in (8, 32)}
    gradient = {steps: gradient_row(model, prompt, t, rounds) for steps, t in targets.items()}
    lines = [f"**Integrated gradients ({STEPS} steps), {title}**", "",
             "| T | captum s | fattr s | captum / fattr | fattr, matmul attention s | "
             "forward + T backward loop s | captum forward calls (rows) | fattr forward calls "
             "(rows) | peak MB captum / fattr |", "|---|---|---|---|---|---|---|---|---|",
             *(line for line, _ in gradient.values()), "",
             f"fattr time T=32 / T=8: {gradient[32][1] / gradient[8][1]:.2f}", "",
             f"**Feature ablation ({prompt_len} features), {title}**", "",
             "| T | captum token by token s | captum forward_in_tokens=False s | fattr s | "
             "speed-up vs token by token | vs forward_in_tokens=False | forward calls (rows): "
             "captum token by token | captum one pass | fattr |",
             "|---|---|---|---|---|---|---|---|---|",
             *(ablation_row(model, prompt, t, rounds) for t in targets.values())]
    return "\n".join(lines)


def main() -> str:
    torch.set_num_threads(1)
    with mock.patch.object(ca._core.llm_attr, "_convert_ids_to_pretty_tokens",
                           lambda ids, tok: [str(i) for i in ids.tolist()]):  # no tokenizer
        return "\n\n".join(table(hidden, vocab) for hidden, vocab in ((16, 256), (64, 2048)))


if __name__ == "__main__":
    print(main())
