"""Selectivity: the attribution is recomputed after every removal (hand-computed curves)."""

from __future__ import annotations

import torch

import fattr


def products(params, x):
    """f(x) = x0 x1 + x2 x3 (one output per example)."""
    return (x[:, 0] * x[:, 1] + x[:, 2] * x[:, 3]) * params["s"]


PARAMS = {"s": torch.ones((), dtype=torch.float64)}


def test_attribution_is_recomputed_each_step():
    """x = (2, 1, 1.5, 1.5), input x gradient = (2, 2, 2.25, 2.25): x2 goes first (f: 4.25 ->
    2). Recomputed, x3's attribution is now 0, so x0 goes next (f -> 0). A ranking fixed at
    the start would remove x3 second and keep f = 2."""
    x = torch.tensor([[2.0, 1.0, 1.5, 1.5]], dtype=torch.float64)
    got = fattr.metrics.selectivity(products, PARAMS, x, fattr.input_x_gradient(products),
                                    steps=2)
    torch.testing.assert_close(got, torch.tensor([(4.25 / 2 + 2 + 0) / 2], dtype=torch.float64))
    fixed = fattr.metrics.deletion(products, PARAMS, x, fattr.input_x_gradient(products)(PARAMS, x),
                                   steps=2)  # removes x2, x3 together, then all: 4.25, 2, 0
    torch.testing.assert_close(fixed, torch.tensor([(4.25 / 2 + 2 + 0) / 2], dtype=torch.float64))
    deletion_4 = fattr.metrics.deletion(products, PARAMS, x,
                                        fattr.input_x_gradient(products)(PARAMS, x), steps=4)
    selectivity_4 = fattr.metrics.selectivity(products, PARAMS, x,
                                              fattr.input_x_gradient(products), steps=4)
    # fixed order x2, x3, x0, x1: 4.25, 2, 2, 0, 0; recomputed x2, x0, ...: 4.25, 2, 0, 0, 0
    torch.testing.assert_close(deletion_4, torch.tensor([(4.25 / 2 + 2 + 2) / 4],
                                                        dtype=torch.float64))
    torch.testing.assert_close(selectivity_4, torch.tensor([(4.25 / 2 + 2) / 4],
                                                           dtype=torch.float64))


def test_removed_features_are_not_picked_again():
    """Saliency of a linear model is the same |w| at every step; tootorch's plain argmax would
    pick the same element forever, fattr moves on to the next one."""
    w = torch.tensor([1.0, 4.0, 2.0], dtype=torch.float64)
    f = lambda p, x: x @ p["w"]
    x = torch.ones(2, 3, dtype=torch.float64)
    got = fattr.metrics.selectivity(f, {"w": w}, x, fattr.saliency(f), steps=3)
    expected = (7 / 2 + 3 + 1 + 0) / 3  # removes 4, then 2, then 1
    torch.testing.assert_close(got, torch.full((2,), expected, dtype=torch.float64))


def test_per_step_fill_and_per_call_arguments():
    w = torch.tensor([1.0, 4.0, 2.0, 3.0], dtype=torch.float64)
    f = lambda p, x: x @ p["w"]
    x = torch.full((1, 4), 2.0, dtype=torch.float64)
    ig = fattr.integrated_gradients(f, steps=4)
    got = fattr.metrics.selectivity(f, {"w": w}, x, ig, steps=2, per_step=2, fill=1.0,
                                    baseline=1.0)
    # IG from baseline 1 ranks w; removing two per step to the fill value 1: 20, 13, 10
    torch.testing.assert_close(got, torch.tensor([(10 + 13 + 5) / 2], dtype=torch.float64))


def test_per_example_model_and_attribution():
    x = torch.tensor([[2.0, 1.0, 1.5, 1.5], [1.0, 3.0, 0.5, 1.0]], dtype=torch.float64)
    one = fattr.per_example(products)
    batched = fattr.metrics.selectivity(products, PARAMS, x, fattr.input_x_gradient(products),
                                        steps=3)
    single = torch.stack([fattr.metrics.selectivity(one, PARAMS, xb, fattr.input_x_gradient(one),
                                                    steps=3) for xb in x])
    torch.testing.assert_close(single, batched)
