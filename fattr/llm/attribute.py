"""`fattr.llm.attribute`: which prompt tokens made a language model say each word."""

from __future__ import annotations

import contextlib
import numbers
import warnings
from collections.abc import Callable, Iterator
from typing import Any

import torch
from torch import Tensor, nn

import fattr
from fattr.core.checks import check_count
from fattr.errors import FattrError, FattrTypeError
from fattr.llm.features import FeatureSpec, token_groups
from fattr.llm.generate import class_logits, greedy
from fattr.llm.inputs import Batch, Prompt, encode_prompt, encode_target, layout, token_strings
from fattr.llm.methods import METHODS, Method, constructor_kwargs, over_targets
from fattr.llm.model import Embedded, Masked, TeacherForced, check_model, vocabulary_size
from fattr.llm.result import TextAttribution
from fattr.llm.scores import ScoreSpec, as_score, check_callable_score

NAME = "fattr.llm.attribute"
SDPA_FALLBACK = "There is a performance drop because we have not yet implemented the batching"


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
            captum's LLMAttribution).
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
    spec = _method(method)
    check_count(max_new_tokens, "max_new_tokens", NAME)
    if not isinstance(include_prefix, bool):
        raise FattrTypeError(f"{NAME}: include_prefix must be True or False, got "
                             f"{include_prefix!r}.")
    if target_chunk is not None:
        check_count(target_chunk, "target_chunk", NAME)
    scoring = as_score(score)
    embeddings = check_model(model, NAME)
    vocab = vocabulary_size(embeddings)
    many = _is_many(prompt)
    prompts = [encode_prompt(p, tokenizer, vocab, NAME) for p in (prompt if many else [prompt])]
    classes = class_logits(model, [p.ids for p in prompts], _pad(model, tokenizer))
    if classes is None:
        targets = _targets(model, tokenizer, prompts, target, many, vocab, max_new_tokens)
    else:
        targets = _classes(model, classes, target, many)
    groups = [token_groups(s, p.ids, p.text, p.encoding, NAME)
              for s, p in zip(_per_prompt(features, len(prompts), many), prompts)]
    batch = layout([p.ids for p in prompts], targets, [g for g, _ in groups],
                   [c for _, c in groups], include_prefix, _pad(model, tokenizer),
                   left=classes is None)
    check_callable_score(scoring, batch.targets.shape[1],
                         vocab if classes is None else classes.shape[1], _dtype(model))
    ctor = constructor_kwargs(method, spec, method_kwargs, NAME)
    run = _gradient if spec.gradient else _perturbation
    table = run(model, spec, scoring, batch, _baseline(baseline, embeddings, spec, method),
                ctor, batch_size, generator, target_chunk)
    names = (lambda ids: token_strings(ids, tokenizer)) if classes is None else \
        (lambda ids: _labels(model, ids))
    results = [_result(table, b, batch, p, groups[b], targets[b], tokenizer, names, method,
                       scoring) for b, p in enumerate(prompts)]
    return results if many else results[0]


def _method(method: Any) -> Method:
    if method not in METHODS:
        raise FattrError(f"{NAME}: unknown method {method!r}; choose one of "
                         f"{', '.join(METHODS)}.")
    return METHODS[method]


def _is_many(prompt: Any) -> bool:
    return isinstance(prompt, (list, tuple)) and len(prompt) > 0 and \
        all(isinstance(p, (str, Tensor, list, tuple)) for p in prompt)


def _per_prompt(features: Any, count: int, many: bool) -> list[Any]:
    if not many or features is None or isinstance(features, str):
        return [features] * count
    if not isinstance(features, (list, tuple)) or len(features) != count:
        raise FattrError(f"{NAME}: with a list of {count} prompts, features must be None, "
                         "'words', or a list with one feature spec per prompt.")
    return list(features)


def _targets(model: nn.Module, tokenizer: Any, prompts: list[Prompt], target: Any, many: bool,
             vocab: int, max_new_tokens: int) -> list[Tensor]:
    if target is None:
        return greedy(model, [p.ids for p in prompts], max_new_tokens, _pad(model, tokenizer))
    if not many:
        return [encode_target(target, tokenizer, vocab, NAME)]
    if not isinstance(target, (list, tuple)) or len(target) != len(prompts):
        raise FattrError(f"{NAME}: with a list of {len(prompts)} prompts, target must be None "
                         "or a list with one target per prompt.")
    return [encode_target(t, tokenizer, vocab, NAME) for t in target]


def _classes(model: nn.Module, logits: Tensor, target: Any, many: bool) -> list[Tensor]:
    """A classifier's targets: the predicted class for None, else a class id or label each."""
    if target is None:
        return [c[None].cpu() for c in logits.argmax(1)]
    given = list(target) if many and isinstance(target, (list, tuple)) else [target]
    if len(given) != logits.shape[0]:
        raise FattrError(f"{NAME}: with a list of {logits.shape[0]} prompts, target must be "
                         "None or a list with one class per prompt.")
    label2id = getattr(getattr(model, "config", None), "label2id", None) or {}
    classes = []
    for t in given:
        if isinstance(t, str) and t in label2id:
            t = label2id[t]
        if isinstance(t, Tensor) and t.numel() == 1 and not t.is_floating_point():
            t = int(t)
        if isinstance(t, bool) or not isinstance(t, numbers.Integral) or \
                not 0 <= t < logits.shape[1]:
            raise FattrError(f"{NAME}: the model is a classifier of {logits.shape[1]} classes; "
                             f"target must be a class id in 0..{logits.shape[1] - 1}, one of "
                             f"its labels {sorted(label2id)} or None (the predicted class), "
                             f"got {t!r}.")
        classes.append(torch.tensor([int(t)]))
    return classes


def _labels(model: nn.Module, ids: Tensor) -> list[str]:
    id2label = getattr(getattr(model, "config", None), "id2label", None) or {}
    return [str(id2label.get(i, i)) for i in ids.tolist()]


def _pad(model: nn.Module, tokenizer: Any) -> int:
    """The id put in padded positions (never attended to): the tokenizer's or the model's pad
    token, else its end-of-sequence token, else 0."""
    config = getattr(model, "generation_config", None) or getattr(model, "config", None)
    for value in (getattr(tokenizer, "pad_token_id", None), getattr(config, "pad_token_id", None),
                  getattr(config, "eos_token_id", None), 0):
        if isinstance(value, (list, tuple)):
            value = value[0] if value else None
        if isinstance(value, numbers.Integral):
            return int(value)
    return 0


def _dtype(model: nn.Module) -> torch.dtype:
    return next(p.dtype for p in model.parameters() if p.is_floating_point())


def _baseline(baseline: Any, embeddings: nn.Module, spec: Method, method: str) -> Tensor:
    """The baseline as embeddings: (d,), or (K, d) for gradient_shap."""
    weight = embeddings.weight
    if baseline is None:
        baseline = 0
    if isinstance(baseline, Tensor) and not baseline.is_floating_point() and baseline.ndim == 0:
        baseline = int(baseline)
    if isinstance(baseline, numbers.Integral) and not isinstance(baseline, bool):
        if not 0 <= baseline < weight.shape[0]:
            raise FattrError(f"{NAME}: baseline token id {baseline} is outside the vocabulary "
                             f"of {weight.shape[0]} ids.")
        with torch.no_grad():
            return embeddings(torch.tensor([int(baseline)], device=weight.device))[0]
    allowed = ((weight.shape[1],), ) + (((-1, weight.shape[1]),) if method == "gradient_shap"
                                         else ())
    if not isinstance(baseline, Tensor) or not baseline.is_floating_point() or not any(
            baseline.ndim == len(s) and baseline.shape[-1] == s[-1] for s in allowed):
        got = tuple(baseline.shape) if isinstance(baseline, Tensor) else type(baseline).__name__
        raise FattrError(f"{NAME}: baseline must be a token id or an embedding of shape "
                         f"({weight.shape[1]},)" + (" (or a distribution (K, "
                                                     f"{weight.shape[1]}) for gradient_shap)"
                                                     if method == "gradient_shap" else "")
                         + f"; got {got}.")
    return baseline.detach().to(weight.device, weight.dtype)


def _gradient(model: nn.Module, spec: Method, scoring: Any, batch: Batch, base: Tensor,
              ctor: dict[str, Any], batch_size: int | None, generator: Any,
              chunk: int | None) -> Tensor:
    """(T + 1, B, F): the method on the input embeddings, summed over the embedding axis and
    over each feature's tokens; one backward pass per target token, all in one vmap. The
    sequence row is their sum where the method and the score are linear (the sequence score
    is the sum of the token scores), else one more attribution."""
    scorer = TeacherForced(model, scoring)
    f, params = fattr.functional(Embedded(scorer))
    device = base.device
    ids, groups = batch.ids.to(device), batch.groups.to(device)
    with torch.no_grad():
        x = scorer.embed(ids)
    kwargs = dict(context=x, groups=groups, targets=batch.targets.to(device),
                  **{k: v.to(device) for k, v in batch.model_kwargs.items()})
    attr = spec.build(f, **_with_batch_size(spec, ctor, batch_size))
    per_call: dict[str, Any] = {}
    if "baseline" in spec.per_call:
        per_call["baseline"] = base
    if "baselines" in spec.per_call:
        per_call["baselines"] = base.reshape(-1, 1, base.shape[-1]).expand(-1, *x.shape[1:])
    if "generator" in spec.per_call:
        per_call["generator"] = generator
    count = max(batch.feature_counts)
    steps = batch.targets.shape[1]
    with replayable(generator) as replay, warnings.catch_warnings():
        warnings.filterwarnings("ignore", SDPA_FALLBACK, UserWarning)  # measured: the faster
        token = lambda c: attr(params, x, None, model_kwargs={**kwargs, "column": c},
                               **per_call)
        tokens = _feature_sums(over_targets(token, _columns(batch, steps, device), chunk)
                               .sum(-1).detach(), groups, count)
        if spec.linear(ctor) and scoring.name != "prob":
            return torch.cat([tokens, tokens.sum(0, keepdim=True)])
        replay()
        whole = torch.full((x.shape[0],), steps, device=device)
        sequence = attr(params, x, whole, model_kwargs=kwargs, **per_call)
    return torch.cat([tokens, _feature_sums(sequence.sum(-1).detach()[None], groups, count)])


def _perturbation(model: nn.Module, spec: Method, scoring: Any, batch: Batch, base: Tensor,
                  ctor: dict[str, Any], batch_size: int | None, generator: Any,
                  chunk: int | None) -> Tensor:
    """(T + 1, B, F): the method on a presence vector over the features (0 puts the baseline
    embedding at a feature's tokens), every perturbed forward pass scoring all T tokens."""
    f, params = fattr.functional(Masked(TeacherForced(model, scoring)))
    device = base.device
    present = torch.ones(batch.ids.shape[0], max(batch.feature_counts), dtype=torch.long,
                         device=device)
    per_call: dict[str, Any] = {"baseline": 0, "model_kwargs": dict(
        ids=batch.ids.to(device), groups=batch.groups.to(device), base=base.reshape(1, 1, -1),
        targets=batch.targets.to(device),
        **{k: v.to(device) for k, v in batch.model_kwargs.items()})}
    attr = spec.build(f, **_with_batch_size(spec, ctor, batch_size))
    if "generator" in spec.per_call:
        per_call["generator"] = generator
    run = lambda c: attr(params, present, c, **per_call)
    with torch.no_grad():
        return over_targets(run, _columns(batch, batch.targets.shape[1] + 1, device), chunk)


def _with_batch_size(spec: Method, ctor: dict[str, Any], batch_size: int | None) -> dict:
    import inspect

    if "batch_size" in inspect.signature(spec.build).parameters:
        return {**ctor, "batch_size": batch_size}
    if batch_size is not None:
        raise FattrError(f"{NAME}: batch_size does nothing for fattr.{spec.build.__name__} "
                         "(one forward pass); leave it None.")
    return ctor


def _columns(batch: Batch, count: int, device: torch.device) -> Tensor:
    """(count, B): score column c for every example (columns 0..T-1: the target tokens, T: the
    sequence)."""
    return torch.arange(count, device=device)[:, None].expand(count, batch.ids.shape[0])


@contextlib.contextmanager
def replayable(generator: torch.Generator | None) -> Iterator[Callable[[], None]]:
    """Yields `replay()`, which rewinds `generator` (None: torch's global generator) to its
    state at the start of the block, so a second attribution draws what the first drew."""
    state = torch.get_rng_state() if generator is None else generator.get_state()
    rewind = torch.set_rng_state if generator is None else generator.set_state
    yield lambda: rewind(state)


def _feature_sums(values: Tensor, groups: Tensor, count: int) -> Tensor:
    """(K, B, N) per-position values -> (K, B, count) sums over each feature's positions."""
    index = torch.where(groups >= 0, groups, count).expand_as(values)
    total = values.new_zeros((*values.shape[:2], count + 1))
    return total.scatter_add(2, index, values)[..., :count]


def _text(ids: Tensor, tokenizer: Any) -> str:
    """The text of a feature's tokens: one token as `token_strings` shows it, several decoded
    together (so WordPiece's 'cat', '##s' read 'cats')."""
    if ids.numel() == 1 or tokenizer is None:
        return " ".join(token_strings(ids, tokenizer))
    return tokenizer.decode(ids.tolist())


def _result(table: Tensor, b: int, batch: Batch, prompt: Prompt, groups: tuple[Tensor, int],
            target: Tensor, tokenizer: Any, names: Callable[[Tensor], list[str]], method: str,
            scoring: Any) -> TextAttribution:
    steps, count = batch.target_lengths[b], batch.feature_counts[b]
    group, features = groups
    inputs = [_text(prompt.ids[group == k], tokenizer) for k in range(features)]
    inputs += token_strings(target[:-1], tokenizer)[:count - features]
    depth = batch.targets.shape[1]
    return TextAttribution(table[:steps, b, :count].cpu(), table[depth, b, :count].cpu(), inputs,
                           names(target), method, scoring.name)
