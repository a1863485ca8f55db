"""A digits CNN in float64 with three checkpoints saved during training (shared by the tests)."""

from __future__ import annotations

import copy
from typing import NamedTuple

import torch
from torch import Tensor, nn

from fattr.run.digits import digits_cnn, load_digits, train
from tests.conftest import one_thread


class Run(NamedTuple):
    model: nn.Module
    checkpoints: list[dict[str, Tensor]]
    rates: list[float]
    data: tuple[Tensor, Tensor, Tensor, Tensor]  # x_train, y_train, x_test, y_test


def digits_run(rows: int = 400, epochs: int = 3, seed: int = 0) -> Run:
    """A float64 digits CNN trained `epochs` epochs on `rows` rows, a checkpoint after each."""
    with one_thread():
        return _digits_run(rows, epochs, seed)


def _digits_run(rows: int, epochs: int, seed: int) -> Run:
    x_train, y_train, x_test, y_test = load_digits(seed)
    x_train, x_test = x_train.double(), x_test.double()
    torch.manual_seed(seed)
    model = digits_cnn().double()
    checkpoints = []
    for epoch in range(epochs):
        train(model, x_train[:rows], y_train[:rows], epochs=1, seed=epoch)
        checkpoints.append({k: v.detach().clone() for k, v in model.state_dict().items()})
    rates = [3e-3 * 0.5 ** i for i in range(epochs)]
    return Run(model.eval(), checkpoints, rates, (x_train, y_train, x_test, y_test))


def captum_loader(run: Run):
    """captum's checkpoints_load_func over the in-memory checkpoints (ids 0, 1, 2)."""
    def load(module: nn.Module, i: int) -> float:
        module.load_state_dict(run.checkpoints[i])
        return run.rates[i]
    return load


def peer(run: Run) -> nn.Module:
    return copy.deepcopy(run.model)
