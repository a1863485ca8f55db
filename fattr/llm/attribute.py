"""`fattr.llm.attribute`: which prompt tokens made a language model say each word."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor, nn

from fattr.core.checks import check_count
from fattr.errors import FattrError, FattrTypeError
from fattr.llm.features import FeatureSpec, token_groups
from fattr.llm.inputs import (
    Batch,
    Prompt,
    encode_prompt,
    is_many,
    layout,
    pad_id,
    per_prompt,
    token_strings,
)
from fattr.llm.methods import baseline_embedding, constructor_kwargs, method_named
from fattr.llm.model import check_model, vocabulary_size
from fattr.llm.result import TextAttribution
from fattr.llm.run import gradient_table, perturbation_table
from fattr.llm.scores import ScoreSpec, as_score, check_callable_score
from fattr.llm.targets import labels, targets_for

NAME = "fattr.llm.attribute"


def attribute(model: nn.Module, tokenizer: Any, prompt: Any, target: Any = None, *,
              method: str = "integrated_gradients", max_new_tokens: int = 16,
              baseline: int | Tensor | None = None, features: FeatureSpec = None,
              score: ScoreSpec = "log_prob", batch_size: int | None = None,
              generator: torch.Generator | None = None, include_prefix: bool = False,
              target_chunk: int | None = None, **method_kwargs: Any,
              ) -> TextAttribution | list[TextAttribution]:
    """Attribute each target token of a causal language model to the prompt's tokens, all T
    target tokens in one teacher-forced pass.

    The model runs once on prompt + target[:-1]; target token t is predicted at position
    L - 1 + t, which by causality equals the pass on the prefix prompt + target[:t] that captum
    makes once per token. Gradient methods take the backward pass of all T + 1 scores (T tokens
    and the sequence) as one `torch.func.vmap`; perturbation methods score all T tokens from
    each perturbed forward pass. So the number of forward passes does not grow with T.

        token_attr[t, i] = attribution of score(target token t) to prompt feature i

    Args:
        model: a HuggingFace causal LM in eval mode (anything with `get_input_embeddings()`
            that takes `inputs_embeds=` and returns logits (B, L, V), also under `.logits`);
            or a sequence classifier (BERT-style, logits (B, C)): the class is then the one
            target "token" (target: a class id, a label, or None for the predicted class).
        tokenizer: its tokenizer, or None when prompt and target are token ids.
        prompt: a string or a 1-D LongTensor of ids; a list of them gives a list of results,
            computed as one padded batch with attention masks.
        target: the continuation to explain, a string (encoded without special tokens, as
            captum) or ids (a list of them for a list of prompts); None generates it greedily,
            exactly as `model.generate(do_sample=False, max_new_tokens=max_new_tokens)`.
        method: "integrated_gradients" (default), "saliency", "input_x_gradient",
            "gradient_shap" (on the input embeddings, as captum's LLMGradientAttribution with
            the Layer* method on the embedding layer), "feature_ablation",
            "shapley_value_sampling", "lime", "kernel_shap" (perturbing prompt features, as
            captum's LLMAttribution), or "lrp": AttnLRP (`composite="attnlrp"`, the default)
            or CP-LRP (`composite="cp_lrp"`) of each token's logit (`fattr.lrp` on the input
            embeddings; one forward pass and one vmapped backward pass for all tokens).
        max_new_tokens: how many tokens to generate when target is None (default 16).
        baseline: a token id, or an embedding (d,) (a distribution (K, d) for gradient_shap),
            put at a feature's tokens to remove it; None is token id 0 (captum's default).
        features: None (one feature per token), "words", a list of (start, end) token spans
            or a list of text segments that concatenate to the prompt (see
            `fattr.llm.features`).
        score: "log_prob" (default, captum's), "prob", "logit", or a callable mapping the
            (T, V) log-probs to a (T, V) table (the target token's entry is taken) or to (T,)
            scores; e.g. contrastive: `lambda lp: lp - lp[:, [foil_id]]`.
        batch_size: the most model inputs per forward pass (path points, perturbations).
        generator: for the random methods (gradient_shap, shapley_value_sampling, lime,
            kernel_shap); the draws are shared by all target tokens.
        include_prefix: also attribute to the generated prefix: the features are then the
            prompt's, followed by the target tokens but the last, and token_attr is the full
            T x (F + T - 1) matrix (zero above the diagonal, by causality). The baseline then
            replaces prefix tokens too.
        target_chunk: backward passes (gradient methods) per vmap chunk over the T + 1
            scores; None takes all at once (one forward pass). A chunk bounds memory at the
            cost of one forward pass per chunk.
        **method_kwargs: for the fattr method: `steps=`, `quadrature=` (IG's rule, fattr's
            `method=`), `samples=`, `stdev=`, `abs=` (saliency, default True), `alpha=`...

    Returns a `TextAttribution` (a list of them for a list of prompts) with token_attr (T, F),
    seq_attr (F,), input_tokens, output_tokens, `to_html()` and `plot()`.

    >>> res = fattr.llm.attribute(model, tokenizer, "The capital of France is", " Paris",
    ...                           method="integrated_gradients", steps=32)
    >>> res.token_attr.shape   # (T, L)

    Differences from captum: one pass instead of one attribution per target token (equal
    results; float32 accumulation aside); token_attr for lime and kernel_shap too (captum gives
    seq_attr only); saliency is `sum_d |grad|` per token (abs=False: captum's
    LayerGradientXActivation(multiply_by_inputs=False)); gradient_shap interpolates between
    embeddings (captum's LLM wrapper can only switch whole tokens).

    Sundararajan, Taly, Yan, "Axiomatic Attribution for Deep Networks" (2017),
    https://arxiv.org/abs/1703.01365 (and the references of each method); Kokhlikyan et al.,
    "Captum" (2020), https://arxiv.org/abs/2009.07896
    """
    spec = method_named(method, NAME)
    check_count(max_new_tokens, "max_new_tokens", NAME)
    if not isinstance(include_prefix, bool):
        raise FattrTypeError(f"{NAME}: include_prefix must be True or False, got "
                             f"{include_prefix!r}.")
    if target_chunk is not None:
        check_count(target_chunk, "target_chunk", NAME)
    if spec.logit_only:
        if score not in ("log_prob", "logit"):
            raise FattrError(f"{NAME}: method 'lrp' explains the logit of each target token "
                             f"(relevance is a redistribution of the output), got score={score!r}."
                             " Leave score at its default or pass score='logit'.")
        score = "logit"
    scoring = as_score(score)
    kwargs = constructor_kwargs(method, spec, method_kwargs, batch_size, NAME)
    embeddings = check_model(model, NAME)
    base = baseline_embedding(baseline, embeddings, method, NAME)
    vocab, many, pad = vocabulary_size(embeddings), is_many(prompt), pad_id(model, tokenizer)
    prompts = [encode_prompt(p, tokenizer, vocab, NAME) for p in (prompt if many else [prompt])]
    specs = [features] * len(prompts) if features is None or isinstance(features, str) else \
        per_prompt(features, len(prompts), many, "feature spec", NAME)
    groups = [token_groups(s, p.ids, p.text, p.encoding, NAME) for s, p in zip(specs, prompts)]
    targets, classes = targets_for(model, tokenizer, [p.ids for p in prompts], target, many,
                                   vocab, max_new_tokens, pad, NAME)
    batch = layout([p.ids for p in prompts], targets, [g for g, _ in groups],
                   [c for _, c in groups], include_prefix, pad, left=classes is None)
    check_callable_score(scoring, batch.targets.shape[1], classes or vocab, base.dtype)
    run = gradient_table if spec.gradient else perturbation_table
    table = run(model, spec, scoring, batch, base, kwargs, generator, target_chunk)
    names = (lambda ids: token_strings(ids, tokenizer)) if classes is None else \
        (lambda ids: labels(model, ids))
    results = [_result(table, b, batch, p, groups[b], targets[b], tokenizer, names, method,
                       scoring.name) for b, p in enumerate(prompts)]
    return results if many else results[0]


def _text(ids: Tensor, tokenizer: Any) -> str:
    """The text of a feature's tokens: one token as `token_strings` shows it, several decoded
    together (so WordPiece's 'cat', '##s' read 'cats')."""
    if ids.numel() == 1 or tokenizer is None:
        return " ".join(token_strings(ids, tokenizer))
    return tokenizer.decode(ids.tolist())


def _result(table: Tensor, b: int, batch: Batch, prompt: Prompt, groups: tuple[Tensor, int],
            target: Tensor, tokenizer: Any, names: Callable[[Tensor], list[str]], method: str,
            score: str) -> TextAttribution:
    """Example b's rows and columns of the (T + 1, B, F) table, with its token strings."""
    steps, count = batch.target_lengths[b], batch.feature_counts[b]
    group, features = groups
    inputs = [_text(prompt.ids[group == k], tokenizer) for k in range(features)]
    inputs += token_strings(target[:-1], tokenizer)[:count - features]
    depth = batch.targets.shape[1]
    return TextAttribution(table[:steps, b, :count].cpu(), table[depth, b, :count].cpu(), inputs,
                           names(target), method, score)
