"""Model randomization: cascading re-initialization into a params copy, rank correlations."""

from __future__ import annotations

import pytest
import torch
from scipy.stats import spearmanr

import fattr
from fattr.metrics.randomization import average_ranks, spearman
from tests.conftest import assert_unchanged, mlp, state_snapshot


def test_spearman_matches_scipy_with_ties():
    g = torch.Generator().manual_seed(0)
    a = torch.randint(0, 5, (4, 30), generator=g).double()  # many ties
    b = torch.randn(4, 30, generator=g, dtype=torch.float64)
    b[:, :10] = 0.0
    expected = torch.tensor([spearmanr(a[i], b[i])[0] for i in range(4)], dtype=torch.float64)
    torch.testing.assert_close(spearman(a, b), expected)
    assert average_ranks(torch.tensor([[3.0, 1, 1, 2]])).tolist() == [[3.0, 0.5, 0.5, 2.0]]


def test_saliency_decorrelates_and_module_is_untouched(digits_model):
    model, (_, _, x_test, y_test) = digits_model
    f, params = fattr.functional(model)
    before = state_snapshot(model)
    kept = {k: v.clone() for k, v in params.items()}
    x, y = x_test[:16], y_test[:16]
    sim = fattr.metrics.model_randomization(f, params, x, y, fattr.saliency,
                                            generator=torch.Generator().manual_seed(0))
    assert sim.shape == (3, 16)  # Linear head, conv 2, conv 1
    mean = sim.mean(1)  # |saliency|: about 0.30, 0.26, 0.20 (an untouched model gives 1)
    assert bool((mean[1:] < mean[:-1]).all()), mean  # falls layer by layer
    assert mean[-1] < 0.25, mean
    signed = fattr.metrics.model_randomization(f, params, x, y,
                                               lambda f: fattr.saliency(f, abs=False),
                                               generator=torch.Generator().manual_seed(0))
    assert bool((signed.mean(1).abs() < 0.15).all()), signed.mean(1)
    assert_unchanged(model, before)
    for k, v in params.items():
        assert torch.equal(v, kept[k]), k
    # the attribution of the untouched model is still what it was
    torch.testing.assert_close(fattr.saliency(f)(params, x, y), fattr.saliency(f)(kept, x, y))


def test_input_times_gradient_stays_similar(digits_model):
    """Adebayo et al.'s observation: |x * grad| is dominated by the input, so it stays
    correlated with itself under randomization while |grad| does not."""
    model, (_, _, x_test, y_test) = digits_model
    f, params = fattr.functional(model)
    x, y = x_test[:16], y_test[:16]
    g = lambda: torch.Generator().manual_seed(0)
    ixg = fattr.metrics.model_randomization(f, params, x, y, fattr.input_x_gradient, g(),
                                            similarity="spearman_abs")
    sal = fattr.metrics.model_randomization(f, params, x, y, fattr.saliency, g(),
                                            similarity="spearman_abs")
    assert ixg[-1].mean() > 0.7 and ixg[-1].mean() > sal[-1].mean() + 0.3


def test_layer_order_explicit_layers_and_generator():
    net = mlp()
    f, params = fattr.functional(net)
    x = torch.randn(3, 5, dtype=torch.float64)
    method = lambda f: fattr.saliency(f, abs=False)
    g = lambda: torch.Generator().manual_seed(1)
    auto = fattr.metrics.model_randomization(f, params, x, 0, method, g())
    explicit = fattr.metrics.model_randomization(f, params, x, 0, method, g(),
                                                 layers=["4", net[2], "0"])
    torch.testing.assert_close(auto, explicit)  # top first: 4, 2, 0
    assert auto.shape == (3, 3)
    # randomizing the top layer only: compare with the attribution of a hand-made params copy
    fresh = dict(params)
    gen = g()
    for name in ("4.weight", "4.bias"):
        bound = 1 / 8 ** 0.5
        fresh[name] = (2 * torch.rand(params[name].shape, generator=gen,
                                      dtype=torch.float64) - 1) * bound
    expected = spearman(method(f)(params, x, 0), method(f)(fresh, x, 0))
    torch.testing.assert_close(auto[0], expected)
    assert not torch.equal(auto, fattr.metrics.model_randomization(
        f, params, x, 0, method, torch.Generator().manual_seed(2)))


def test_per_example_model_and_custom_similarity():
    net = mlp()
    f, params = fattr.functional(net)
    x = torch.randn(3, 5, dtype=torch.float64)
    cosine = lambda a, b: torch.nn.functional.cosine_similarity(a.flatten(1), b.flatten(1))
    g = lambda: torch.Generator().manual_seed(0)
    batched = fattr.metrics.model_randomization(f, params, x, 1, fattr.saliency, g(),
                                                similarity=cosine)
    single = fattr.metrics.model_randomization(fattr.per_example(f), params, x[0], 1,
                                               fattr.saliency, g(), similarity=cosine)
    assert single.shape == (3,)
    torch.testing.assert_close(single, batched[:, 0])


@pytest.mark.parametrize("kwargs, error, match", [
    ({"similarity": "ssim"}, ValueError, "similarity must be one of spearman"),
    ({"layers": ["1"]}, ValueError, "layer '1' has no parameters"),
    ({"layers": ["nope"]}, ValueError, "has no layer named 'nope'"),
])
def test_errors(kwargs, error, match):
    net = mlp()
    before = state_snapshot(net)
    f, params = fattr.functional(net)
    with pytest.raises(error, match=match):
        fattr.metrics.model_randomization(f, params, torch.randn(2, 5, dtype=torch.float64), 0,
                                          fattr.saliency, **kwargs)
    assert_unchanged(net, before)


def test_plain_function_needs_a_module():
    with pytest.raises(TypeError, match="needs the module tree"):
        fattr.metrics.model_randomization(lambda p, x: x, {}, torch.randn(2, 3), None,
                                          fattr.saliency)
    with pytest.raises(TypeError, match="method must map a model function"):
        f, params = fattr.functional(mlp())
        fattr.metrics.model_randomization(f, params, torch.randn(2, 5, dtype=torch.float64), 0,
                                          "saliency")
