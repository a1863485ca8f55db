"""Bad input to the concept methods gets a message that names the argument and the fix."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import fattr
from fattr.errors import FattrError, FattrTypeError
from tests.conftest import assert_unchanged, state_snapshot


@pytest.fixture
def setup():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(6, 8), nn.ReLU(), nn.Linear(8, 3)).double().eval()
    f, params = fattr.functional(model)
    g = torch.Generator().manual_seed(0)
    concept = torch.randn(12, 6, generator=g, dtype=torch.float64) + 2
    random = torch.randn(12, 6, generator=g, dtype=torch.float64)
    return model, f, params, concept, random


def test_cav_errors(setup):
    _, f, params, concept, random = setup
    with pytest.raises(FattrTypeError, match=r"classifier must be one of \['logistic', 'ridge'\]"):
        fattr.concepts.cav(f, params, "1", concept, random, classifier="svm")
    with pytest.raises(FattrError, match="needs at least 2 rows"):
        fattr.concepts.cav(f, params, "1", concept[:1], random)
    with pytest.raises(FattrError, match="test_fraction must be a float between 0 and 1"):
        fattr.concepts.cav(f, params, "1", concept, random, test_fraction=1.0)
    with pytest.raises(FattrError, match="has no layer named 'relu'"):
        fattr.concepts.cav(f, params, "relu", concept, random)
    with pytest.raises(FattrError, match="classifier returned a zero vector"):
        fattr.concepts.cav(f, params, "1", concept, random,
                           classifier=lambda a, y: (torch.zeros(a.shape[1]), torch.zeros(())))
    with pytest.raises(FattrError, match="training split holds one class only"):
        fattr.concepts.cav(f, params, "1", concept[:2], random[:2], test_fraction=0.7,
                           generator=torch.Generator().manual_seed(3))


def test_tcav_errors(setup):
    model, f, params, concept, random = setup
    before = state_snapshot(model)
    c = fattr.concepts.cav(f, params, "1", concept, random)
    with pytest.raises(FattrError, match="a CAV was trained at layer '1', but this method taps "
                                         "'0'"):
        fattr.concepts.tcav(f, "0", [c])
    with pytest.raises(FattrTypeError, match="cavs must be a CAV, a non-empty list of CAVs"):
        fattr.concepts.tcav(f, "1", [])
    with pytest.raises(FattrError, match="CAV vectors must be a float tensor"):
        fattr.concepts.tcav(f, "1", torch.ones(2, 3, 4))
    with pytest.raises(FattrError, match="the CAVs have 5 entries but layer '1' has 8 outputs"):
        fattr.concepts.tcav(f, "1", torch.ones(5, dtype=torch.float64))(params, concept, 0)
    with pytest.raises(FattrError, match="tcav: x must hold at least one example"):
        fattr.concepts.tcav(f, "1", [c])(params, concept[:0], 0)
    with pytest.raises(FattrError, match="target 3 is out of range"):
        fattr.concepts.tcav(f, "1", [c])(params, concept, 3)
    assert_unchanged(model, before)


def test_significance_needs_three_random_sets(setup):
    _, f, params, concept, random = setup
    with pytest.raises(FattrError, match="random_sets must be a list of at least 3 tensors.*got "
                                         "2 sets"):
        fattr.concepts.tcav_significance(f, params, "1", concept, [random, random], concept, 0)
    with pytest.raises(FattrError, match="got Tensor"):
        fattr.concepts.tcav_significance(f, params, "1", concept, random, concept, 0)


def test_tcav_on_a_plain_function_needs_a_module(setup):
    def g(params, x):
        return x @ params["w"]

    with pytest.raises(FattrTypeError, match="needs the module tree"):
        fattr.concepts.tcav(g, "w", torch.ones(1, 3))
