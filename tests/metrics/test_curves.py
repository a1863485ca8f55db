"""Deletion, insertion, pixel flipping and ROAD: hand-computed curves, the ROAD imputation
against a scipy re-derivation of the reference system, and axioms on the trained digits CNN."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.ndimage import gaussian_filter
from scipy.sparse import lil_matrix
from scipy.sparse.linalg import spsolve

import fattr
from fattr.metrics.road import linear_imputation

W = torch.tensor([4.0, 3.0, 2.0, 1.0], dtype=torch.float64)


def linear(params, x):
    return x.flatten(1) @ params["w"]


def test_deletion_and_insertion_by_hand():
    """f(x) = w . x, x = 1, attribution = w * x: removing in the order 4, 3, 2, 1 gives the
    deletion curve 10, 6, 3, 1, 0 and the insertion curve 0, 4, 7, 9, 10 (steps of 1/4)."""
    x = torch.ones(1, 4, dtype=torch.float64)
    a = W[None] * x
    deletion = fattr.metrics.deletion(linear, {"w": W}, x, a, steps=4)
    insertion = fattr.metrics.insertion(linear, {"w": W}, x, a, steps=4)
    torch.testing.assert_close(deletion, torch.tensor([(5 + 6 + 3 + 1 + 0) / 4],
                                                      dtype=torch.float64))
    torch.testing.assert_close(insertion, torch.tensor([(0 + 4 + 7 + 9 + 5) / 4],
                                                       dtype=torch.float64))
    # the reversed (worst) order: deletion curve 10, 9, 7, 4, 0
    worst = fattr.metrics.deletion(linear, {"w": W}, x, -a, steps=4)
    torch.testing.assert_close(worst, torch.tensor([(5 + 9 + 7 + 4 + 0) / 4],
                                                   dtype=torch.float64))


def test_uneven_steps_baseline_and_batch():
    """n = 4 features, 3 steps: floor(4 i / 3) = 0, 1, 2, 4 removed; baseline 0.5; two examples
    with their own orders and targets."""
    x = torch.tensor([[1.0, 2.0, 3.0, 4.0], [4.0, 3.0, 2.0, 1.0]], dtype=torch.float64)
    a = torch.tensor([[0.1, 0.4, 0.3, 0.2], [0.0, 0.0, 1.0, 2.0]], dtype=torch.float64)
    f = lambda p, x: torch.stack([x @ p["w"], -(x @ p["w"])], 1)
    got = fattr.metrics.deletion(f, {"w": W}, x, a, torch.tensor([0, 1]), steps=3, baseline=0.5)

    def curve(xb, order, sign):
        xs, values = xb.clone(), [sign * float(xb @ W)]
        removed = [order[:1], order[1:2], order[2:]]
        for group in removed:
            xs[group] = 0.5
            values.append(sign * float(xs @ W))
        return values

    expected = []
    for xb, ab, sign in ((x[0], a[0], 1), (x[1], a[1], -1)):
        order = torch.argsort(ab, descending=True, stable=True)
        v = curve(xb, order, sign)
        expected.append((v[0] / 2 + v[1] + v[2] + v[3] / 2) / 3)
    torch.testing.assert_close(got, torch.tensor(expected, dtype=torch.float64))


def test_pixel_maps_remove_all_channels():
    """A (B, 1, H, W) map removes whole pixels: every channel of the top pixel at once."""
    x = torch.ones(1, 3, 2, 2, dtype=torch.float64)
    f = lambda p, x: x.sum((1, 2, 3))[:, None] * p["s"]
    a = torch.tensor([[[[4.0, 3.0], [2.0, 1.0]]]], dtype=torch.float64)
    got = fattr.metrics.deletion(f, {"s": torch.ones(1, dtype=torch.float64)}, x, a, 0, steps=4)
    torch.testing.assert_close(got, torch.tensor([(6 + 9 + 6 + 3 + 0) / 4], dtype=torch.float64))


def test_pixel_flipping_noise_and_given_baseline():
    x = torch.tensor([[0.0, 1.0, 2.0, 3.0]], dtype=torch.float64)
    a = torch.tensor([[1.0, 2.0, 3.0, 4.0]], dtype=torch.float64)
    g = torch.Generator().manual_seed(3)
    got = fattr.metrics.pixel_flipping(linear, {"w": W}, x, a, steps=4, generator=g)
    noise = 3.0 * torch.rand((1, 4), generator=torch.Generator().manual_seed(3),
                             dtype=torch.float64)
    values = [float(x[0] @ W)]
    xs = x[0].clone()
    for i in (3, 2, 1, 0):
        xs[i] = noise[0, i]
        values.append(float(xs @ W))
    expected = (values[0] / 2 + sum(values[1:4]) + values[4] / 2) / 4
    torch.testing.assert_close(got, torch.tensor([expected], dtype=torch.float64))
    same = fattr.metrics.pixel_flipping(linear, {"w": W}, x, a, steps=4, baseline=0.0)
    torch.testing.assert_close(same, fattr.metrics.deletion(linear, {"w": W}, x, a, steps=4))


def test_insertion_default_baseline_is_the_rise_blur():
    """steps=1: the curve is (f(blur(x)), f(x)); the blur is scipy's gaussian_filter with
    sigma 5 and zero padding."""
    x = torch.rand(2, 3, 12, 12, dtype=torch.float64)
    weights = torch.randn(3 * 12 * 12, dtype=torch.float64)
    score = lambda p, x: (x.flatten(1) * p["w"]).sum(1)
    a = torch.rand_like(x)
    got = fattr.metrics.insertion(score, {"w": weights}, x, a, steps=1)
    blurred = torch.from_numpy(np.stack([[gaussian_filter(c, 5.0, mode="constant")
                                          for c in image] for image in x.numpy()]))
    expected = (score({"w": weights}, blurred) + score({"w": weights}, x)) / 2
    torch.testing.assert_close(got, expected)


def road_reference(image: np.ndarray, keep: np.ndarray) -> np.ndarray:
    """ROAD's noise-free imputation, re-derived as the sparse system of the reference code: for
    every removed pixel, sum_n w_n (v_i - v_n) = 0 over in-image neighbours (1/6 direct, 1/12
    diagonal), kept neighbours on the right-hand side; solved exactly with spsolve."""
    channels, h, w = image.shape
    flat = image.reshape(channels, -1)
    unknown = np.flatnonzero(~keep.ravel())
    index = {int(p): i for i, p in enumerate(unknown)}
    a = lil_matrix((len(unknown), len(unknown)))
    b = np.zeros((len(unknown), channels))
    for row, p in enumerate(unknown):
        i, j = divmod(int(p), w)
        total = 0.0
        for di in (-1, 0, 1):
            for dj in (-1, 0, 1):
                ii, jj = i + di, j + dj
                if (di, dj) == (0, 0) or not (0 <= ii < h and 0 <= jj < w):
                    continue
                weight = 1 / 12 if di and dj else 1 / 6
                total += weight
                q = ii * w + jj
                if keep.ravel()[q]:
                    b[row] -= weight * flat[:, q]
                else:
                    a[row, index[q]] = weight
        a[row, row] = -total
    out = flat.copy()
    out[:, unknown] = spsolve(a.tocsc(), b).reshape(len(unknown), channels).T
    return out.reshape(image.shape)


@pytest.mark.parametrize("size", [8, 24])
def test_road_imputation_matches_the_sparse_solve(size):
    g = torch.Generator().manual_seed(size)
    x = torch.rand(3, 3, size, size, generator=g, dtype=torch.float64)
    removed = torch.rand(3, 1, size, size, generator=g) < 0.6
    removed[1, :, 2:size - 2, 2:size - 2] = True  # a large hole
    exact = linear_imputation(x, removed, 4 * size)
    default = linear_imputation(x, removed, 2 * size)  # road's default: H + W steps
    for k in range(3):
        expected = road_reference(x[k].numpy(), ~removed[k, 0].numpy())
        np.testing.assert_allclose(exact[k].numpy(), expected, atol=1e-9)
        np.testing.assert_allclose(default[k].numpy(), expected, atol=1e-5)
    got = exact
    assert torch.equal(got[~removed.expand_as(x)], x[~removed.expand_as(x)])


def test_road_curve_uses_the_imputation():
    """One step with everything but one pixel removed and no noise: the input the model sees is
    constant (the kept pixel's value spread by the imputation)."""
    x = torch.rand(1, 1, 5, 5, dtype=torch.float64)
    a = torch.arange(25, dtype=torch.float64).reshape(1, 1, 5, 5)  # pixel 0 ranked last
    seen = []
    f = lambda p, x: seen.append(x) or x.flatten(1).sum(1)
    fattr.metrics.road(f, {}, x, a, steps=25, noise=0.0, iterations=50)
    batch = torch.cat(seen)  # (26, 1, 5, 5): 0..25 pixels removed
    torch.testing.assert_close(batch[24], torch.full_like(x[0], float(x[0, 0, 0, 0])))
    assert torch.equal(batch[0], x[0])


def test_faithful_attribution_beats_random_on_digits(digits_model):
    """Integrated gradients vs a random map on the trained digits CNN: lower deletion, pixel
    flipping and ROAD (MoRF) areas, higher insertion area, on average over 48 test digits."""
    model, (_, _, x_test, y_test) = digits_model
    f, params = fattr.functional(model)
    x, y = x_test[:48], y_test[:48]
    good = fattr.integrated_gradients(f, steps=16)(params, x, y)
    noise = torch.rand(x.shape, generator=torch.Generator().manual_seed(0))
    m = fattr.metrics
    for metric, better in [(m.deletion, -1), (m.insertion, 1), (m.pixel_flipping, -1),
                           (m.road, -1)]:
        g = lambda: torch.Generator().manual_seed(1)
        kwargs = {"generator": g()} if metric in (m.pixel_flipping, m.road) else {}
        ours = metric(f, params, x, good, y, **kwargs).mean()
        random = metric(f, params, x, noise, y, **kwargs).mean()
        assert better * (ours - random) > 0.5, (metric.__name__, ours, random)
