"""RectGrad's bracketed percentile (long rows on the CPU) against a plain kthvalue: equal to the
last bit, including the cases where the bracket misses and the plain selection runs."""

from __future__ import annotations

import importlib

import pytest
import torch

from fattr.rules.rectgrad import BRACKETED, row_percentile

rectgrad_module = importlib.import_module("fattr.rules.rectgrad")


def kth(v: torch.Tensor, q: float) -> torch.Tensor:
    flat = v.reshape(v.shape[0], -1)
    return flat.kthvalue(round(q / 100 * (flat.shape[1] - 1)) + 1, dim=1).values


def activations(shape, dtype=torch.float32) -> torch.Tensor:
    """ReLU output times a gradient: half exact zeros, a continuous positive tail."""
    return torch.randn(shape, dtype=dtype).relu() * torch.randn(shape, dtype=dtype)


@pytest.mark.parametrize("shape, q, dtype", [
    ((3, 16, 40, 40), 98.0, torch.float32), ((2, 64, 32, 32), 98.0, torch.float64),
    ((2, 8, 64, 64), 90.0, torch.float32), ((4, BRACKETED), 50.0, torch.float32),
    ((2, 3, 100, 100), 99.9, torch.float32), ((2, 3, 100, 100), 0.0, torch.float32),
    ((2, 3, 100, 100), 100.0, torch.float32)])
def test_bracketed_percentile_is_exact(shape, q, dtype):
    v = activations(shape, dtype)
    assert torch.equal(row_percentile(v, q).reshape(-1), kth(v, q))


def test_ties_at_the_percentile_fall_back_to_the_plain_selection(monkeypatch):
    """More than 98% zeros: the percentile is 0, the bracket's edge; the answer is still 0."""
    v = torch.zeros(2, 40000)
    v[:, :100] = torch.rand(2, 100)
    calls = []
    kthvalue = torch.Tensor.kthvalue
    monkeypatch.setattr(torch.Tensor, "kthvalue",
                        lambda self, *a, **k: calls.append(1) or kthvalue(self, *a, **k))
    assert torch.equal(row_percentile(v, 98.0).reshape(-1), torch.zeros(2))
    assert len(calls) == 2  # the bracketed selection, then the plain one


def test_a_bracket_from_an_unrepresentative_sample_is_caught(monkeypatch):
    """Rows whose sampled elements (every stride-th) are all larger than the rest: the
    bracket misses the percentile, and the plain selection gives the exact value."""
    v = torch.rand(2, 50000)
    stride = rectgrad_module._stride(v.shape[1])
    v[:, ::stride] += 10.0
    calls = []
    kthvalue = torch.Tensor.kthvalue
    monkeypatch.setattr(torch.Tensor, "kthvalue",
                        lambda self, *a, **k: calls.append(1) or kthvalue(self, *a, **k))
    got = row_percentile(v, 98.0).reshape(-1)
    assert len(calls) == 2  # the bracket missed
    monkeypatch.undo()
    assert torch.equal(got, kth(v, 98.0))


def test_rows_under_a_transform_take_the_plain_selection():
    v = activations((3, 2, 100, 100))
    mapped = torch.func.vmap(lambda t: row_percentile(t, 98.0))(v.unsqueeze(1))
    assert torch.equal(mapped.reshape(-1), kth(v, 98.0))
