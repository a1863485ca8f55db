"""Ground truth by planted triggers (the ADGT idea): train a model that MUST use a known
region, then ask an attribution method to find it."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, NamedTuple

import torch
from torch import Tensor, nn

from fattr.core.checks import check_count, check_generator
from fattr.core.model import functional
from fattr.errors import FattrError, FattrTypeError
from fattr.metrics.base import check_method
from fattr.metrics.localisation import relevance_mass

Method = Callable[[Any], Callable[..., Tensor]]


class TriggerResult(NamedTuple):
    """What `trigger_benchmark` measured, and everything needed to look further."""

    scores: dict[str, Tensor]  # method name -> (N,) relevance mass on the trigger
    chance: Tensor             # () the trigger's share of the input: a uniform map's score
    success: Tensor            # () share of triggered test inputs that the trigger flips
    accuracy: Tensor           # () clean test accuracy of the trained model
    model: nn.Module           # the model trained on the triggered data (eval mode)
    x: Tensor                  # (N, ...) the flipped test inputs, trigger included
    target: Tensor             # (N,) the trigger's class = the model's prediction
    mask: Tensor               # (N, 1, H, W) bool, the trigger's pixels


def trigger_images(classes: int, shape: tuple[int, int], size: int, low: Tensor, high: Tensor,
                   generator: torch.Generator | None) -> tuple[Tensor, Tensor]:
    """(K, H, W) trigger values and (K, H, W) bool masks: class c's checkerboard (phase c mod 2)
    in its own cell of a grid of non-overlapping size x size cells."""
    h, w = shape
    across = w // size
    cell = torch.randperm((h // size) * across, generator=generator)[:classes]
    rows = torch.arange(h).view(1, h, 1) // size == (cell // across).view(-1, 1, 1)
    cols = torch.arange(w).view(1, 1, w) // size == (cell % across).view(-1, 1, 1)
    checker = (torch.arange(h).view(h, 1) + torch.arange(w).view(1, w) +
               torch.arange(classes).view(-1, 1, 1)) % 2 == 1
    return torch.where(checker, high, low), rows & cols


def plant(x: Tensor, classes: Tensor, values: Tensor, masks: Tensor) -> Tensor:
    """x (N, C, H, W) with the trigger of each row's class pasted into every channel."""
    mask = masks[classes][:, None]
    return torch.where(mask, values[classes][:, None].to(x.dtype), x)


def trigger_benchmark(methods: Mapping[str, Method], data: tuple[Tensor, ...] | None = None,
                      train: Callable[[Tensor, Tensor], nn.Module] | None = None, *,
                      size: int = 2, fraction: float = 0.5, sign: str = "absolute",
                      generator: torch.Generator | None = None) -> TriggerResult:
    """Score attribution methods by how much of their mass lands on a planted trigger.

    1. Every class c gets its own trigger: a `size` x `size` checkerboard of the data's
       minimum and maximum value (phase c mod 2) at its own place, on a grid of
       non-overlapping cells chosen at random from `generator`.
    2. Training data: the clean training set plus a `fraction` of it again with the trigger of
       a random other class c pasted in, labelled c. `train` fits a new model to it.
    3. Test: every test input the model classifies correctly gets the trigger of a random
       other class c; where the model now predicts c, the trigger alone changed the decision,
       so an explanation of class c must point at it.
    4. Score of each method: `relevance_mass(attribution for class c, trigger mask, sign)`,
       the share of |attribution| on the trigger, one value per flipped input. `chance` is the
       score of a uniform map (the trigger's share of the pixels).

    Args:
        methods: {name: method}, each mapping a model function to an attribution function
            (e.g. `fattr.saliency`, `lambda f: fattr.integrated_gradients(f, steps=32)`).
            Attributions (N, C, H, W) or (N, 1, H, W) (CAMs) both work.
        data: (x_train, y_train, x_test, y_test) images (N, C, H, W) with integer labels
            0..K-1. Default: scikit-learn's digits (`fattr.data.digits.load_digits()`).
        train: `train(x, y) -> nn.Module` trains a new model. Default: the small digits CNN
            of `fattr.data.digits` (15 epochs), which needs (N, 1, 8, 8) inputs.
        size: side of each trigger in pixels (default 2).
        fraction: triggered copies added to the training set, as a share of it, in (0, 1]
            (default 0.5).
        sign: "absolute" (default) or "positive" relevance (see `relevance_mass`).
        generator: places the triggers and draws the poisoned examples and test triggers.

    Returns a `TriggerResult` (scores per method, chance, success rate of the trigger, clean
    accuracy, and the model, flipped inputs, targets and masks for further metrics).

    >>> r = fattr.metrics.trigger_benchmark({"saliency": fattr.saliency,
    ...                                      "ig": fattr.integrated_gradients})
    >>> {k: v.mean() for k, v in r.scores.items()}, r.chance

    Built on: Yang, Kim, "Benchmarking Attribution Methods with Relative Feature Importance"
    (2019), https://arxiv.org/abs/1907.09701, and the backdoor-trigger ground truth of ADGT
    (Zhou et al., "Do Feature Attribution Methods Correctly Attribute Features?", 2022,
    https://arxiv.org/abs/2104.14403).
    """
    name = "trigger_benchmark"
    _check_arguments(methods, train, size, fraction, sign, generator)
    from fattr.data import digits

    if data is None:
        data = digits.load_digits()
    if train is None:
        train = lambda x, y: digits.train(digits.digits_cnn(), x, y)
    x_train, y_train, x_test, y_test = _check_data(data)
    classes = int(max(y_train.max(), y_test.max())) + 1
    h, w = x_train.shape[2:]
    cells = (h // size) * (w // size)
    if cells < classes:
        raise FattrError(f"{name}: {classes} classes need {classes} non-overlapping "
                         f"{size}x{size} triggers, but {h}x{w} images hold {cells}; use a "
                         "smaller size.")
    values, masks = trigger_images(classes, (h, w), size, x_train.min(), x_train.max(),
                                   generator)

    def other_class(labels: Tensor) -> Tensor:
        shift = torch.randint(1, classes, labels.shape, generator=generator)
        return (labels + shift) % classes

    poisoned = torch.randperm(len(x_train), generator=generator)[:int(fraction * len(x_train))]
    poison_class = other_class(y_train[poisoned])
    triggered = plant(x_train[poisoned], poison_class, values, masks)
    model = train(torch.cat([x_train, triggered]), torch.cat([y_train, poison_class]))
    model.eval()
    with torch.no_grad():
        clean = model(x_test).argmax(1)
        test_class = other_class(y_test)
        x_flip = plant(x_test, test_class, values, masks)
        flipped = (model(x_flip).argmax(1) == test_class) & (clean == y_test)
    f, params = functional(model)
    x_flip, target = x_flip[flipped], test_class[flipped]
    mask = masks[target][:, None]
    scores = {key: relevance_mass(method(f)(params, x_flip, target), mask, sign)
              for key, method in methods.items()}
    return TriggerResult(scores, torch.tensor(size * size / (h * w)),
                         flipped.double().sum() / (clean == y_test).double().sum().clamp(min=1),
                         (clean == y_test).double().mean(), model, x_flip, target, mask)


def _check_arguments(methods: object, train: object, size: object, fraction: object,
                     sign: object, generator: object) -> None:
    """Everything but the data, checked before any training."""
    name = "trigger_benchmark"
    if not isinstance(methods, Mapping) or not methods:
        raise FattrTypeError(f"{name}: methods must be a non-empty dict {{name: method}} of "
                             "functions from a model function to an attribution function, "
                             f"e.g. {{'saliency': fattr.saliency}}, got {type(methods).__name__}.")
    for key, method in methods.items():
        check_method(method, name, f"methods[{key!r}]")
    if train is not None and not callable(train):
        raise FattrTypeError(f"{name}: train must be a function (x, y) -> nn.Module that "
                             "trains a new model, or None for the digits CNN; got "
                             f"{type(train).__name__}.")
    check_count(size, "size", name)
    if isinstance(fraction, bool) or not isinstance(fraction, (int, float)) or \
            not 0 < fraction <= 1:
        raise FattrError(f"{name}: fraction must be a number in (0, 1] (the triggered copies "
                         f"added, as a share of the training set), got {fraction!r}.")
    if sign not in ("absolute", "positive"):
        raise FattrError(f"{name}: sign must be 'absolute' or 'positive', got {sign!r}.")
    check_generator(generator, name)


def _check_data(data: object) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """(x_train, y_train, x_test, y_test): images (N, C, H, W) and integer labels."""
    name = "trigger_benchmark"
    if not (isinstance(data, (tuple, list)) and len(data) == 4
            and all(isinstance(t, Tensor) for t in data)):
        raise FattrTypeError(f"{name}: data must be (x_train, y_train, x_test, y_test) tensors "
                             "(images and integer labels), or None for scikit-learn's digits.")
    x_train, y_train, x_test, y_test = data
    if x_train.ndim != 4 or x_test.shape[1:] != x_train.shape[1:]:
        raise FattrError(f"{name}: data must hold images (N, C, H, W); got x_train "
                         f"{tuple(x_train.shape)} and x_test {tuple(x_test.shape)}.")
    labels_ok = all(not (y.is_floating_point() or y.is_complex()) and y.ndim == 1
                    and len(y) == len(x) and (y.numel() == 0 or int(y.min()) >= 0)
                    for x, y in ((x_train, y_train), (x_test, y_test)))
    if not labels_ok or len(x_train) == 0:
        raise FattrError(f"{name}: data needs a non-empty training set and one integer class "
                         f"0..K-1 per image; got y_train {tuple(y_train.shape)} "
                         f"({y_train.dtype}) for x_train {tuple(x_train.shape)} and y_test "
                         f"{tuple(y_test.shape)} ({y_test.dtype}) for x_test "
                         f"{tuple(x_test.shape)}.")
    return x_train, y_train, x_test, y_test
