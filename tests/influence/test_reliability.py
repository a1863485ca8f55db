"""Bad input to the influence methods gets a message that names the argument and the fix."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

import fattr
from fattr.errors import FattrError, FattrTypeError
from tests.conftest import assert_unchanged, state_snapshot

LOSS = nn.CrossEntropyLoss(reduction="sum")


@pytest.fixture
def setup():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(16, 8), nn.ReLU(), nn.Linear(8, 3)).double()
    model.eval()
    f, params = fattr.functional(model)
    ckpts = [{k: v.clone() for k, v in params.items()}]
    x, y = torch.randn(10, 4, 4, dtype=torch.float64), torch.randint(0, 3, (10,))
    return model, f, ckpts, x, y


@pytest.mark.parametrize("kwargs, match", [
    ({"checkpoints": {}}, "checkpoints must be a non-empty list of params dicts"),
    ({"checkpoints": []}, "checkpoints must be a non-empty list of params dicts"),
    ({"checkpoints": [torch.zeros(2)]}, "checkpoints must be a non-empty list"),
    ({"learning_rates": [1.0, 2.0]}, r"learning_rates must be one finite number or one per "
                                     r"checkpoint \(1\)"),
    ({"learning_rates": float("nan")}, "learning_rates must be one finite number"),
    ({"loss": "ce"}, "loss must be callable as loss"),
    ({"layers": "1", "last_layer": "3"}, "pass layers= .* or last_layer= .*, not both"),
    ({"last_layer": "2"}, "last_layer must be an nn.Linear .* got ReLU at '2'"),
    ({"layers": "linear"}, "has no layer named 'linear'"),
    ({"layers": "2"}, "no trainable parameters to differentiate in layers '2'"),
    ({"projection_dim": 0}, "projection_dim must be a positive int or None, got 0"),
    ({"batch_size": 0}, "batch_size must be a positive int"),
])
def test_bad_configuration(setup, kwargs, match):
    _, f, ckpts, _, _ = setup
    args = {"checkpoints": ckpts, "loss": LOSS, **kwargs}
    with pytest.raises(FattrError, match=match):
        fattr.influence.tracin(f, args.pop("checkpoints"), args.pop("loss"), **args)


def test_a_checkpoint_without_a_parameter(setup):
    _, f, ckpts, _, _ = setup
    broken = {k: v for k, v in ckpts[0].items() if k != "3.bias"}
    with pytest.raises(FattrError, match="checkpoint 1 has no entry '3.bias'"):
        fattr.influence.tracin(f, [ckpts[0], broken], LOSS)


def test_bad_rows(setup):
    _, f, ckpts, x, y = setup
    tr = fattr.influence.tracin(f, ckpts, LOSS)
    with pytest.raises(FattrError, match=r"train_x has 10 rows but its labels have shape \(9,\)"):
        tr(x, y[:9], x, y)
    with pytest.raises(FattrTypeError, match="the labels for test_x must be a tensor"):
        tr(x, y, x, [0, 1])
    with pytest.raises(FattrError, match="train_x is a DataLoader, .* labels must be None"):
        tr(DataLoader(TensorDataset(x, y)), y, x, y)
    with pytest.raises(FattrError, match="a DataLoader must yield \\(x, y\\) pairs"):
        tr(DataLoader(TensorDataset(x)), None, x, y)
    with pytest.raises(FattrError, match="x contains NaN or Inf"):
        tr(x.clone().fill_(float("nan")), y, x, y)
    with pytest.raises(FattrError, match="self_influence: no rows to score"):
        fattr.influence.self_influence(f, ckpts, LOSS)(DataLoader(TensorDataset(x[:0], y[:0])))


@pytest.mark.parametrize("last_layer", [None, "3"])
def test_a_loss_that_does_not_sum(setup, last_layer):
    model, f, ckpts, x, y = setup
    before = state_snapshot(model)
    per_row = nn.CrossEntropyLoss(reduction="none")
    with pytest.raises(FattrError, match=r"loss\(out, y\) must return one scalar.*='sum'"):
        fattr.influence.tracin(f, ckpts, per_row, last_layer=last_layer)(x, y, x, y)
    assert_unchanged(model, before)  # hooks removed after the exception


def test_last_layer_needs_two_dimensional_inputs():
    model = nn.Sequential(nn.Linear(4, 5), nn.Flatten(), nn.Linear(15, 2)).double().eval()
    f, params = fattr.functional(model)
    x, y = torch.randn(6, 3, 4, dtype=torch.float64), torch.randint(0, 2, (6,))
    with pytest.raises(FattrError, match=r"last_layer '0' must take inputs of shape \(batch, "
                                         r"features\); got \(6, 3, 4\).*use layers="):
        fattr.influence.tracin(f, [params], LOSS, last_layer="0")(x, y, x, y)


def test_a_model_in_training_mode(setup):
    model, f, ckpts, x, y = setup
    model.append(nn.Dropout()).train()
    with pytest.raises(FattrError, match="'4' \\(Dropout\\) is in training mode.*model.eval"):
        fattr.influence.self_influence(f, ckpts, LOSS)(x, y)


def test_layers_need_a_module():
    def g(params, x):
        return x @ params["w"]

    with pytest.raises(FattrTypeError, match="needs the module tree"):
        fattr.influence.tracin(g, [{"w": torch.ones(3, 2)}], LOSS, layers="w")


@pytest.mark.parametrize("k", [0, 11, 2.0, True])
def test_top_k_bad_k(k):
    with pytest.raises(FattrError, match=r"k must be an int from 1 to the number of training "
                                         r"examples \(10\)"):
        fattr.influence.top_k(torch.randn(3, 10), k)


def test_top_k_bad_scores():
    with pytest.raises(FattrError, match=r"scores must be an \(n_test, n_train\) tensor, got "
                                         r"\(10,\)"):
        fattr.influence.top_k(torch.randn(10), 2)
