"""Tuple inputs and extra forward arguments through the gradient family and DeepLIFT: parity
with captum 0.9 on its own multi-input test models (float64)."""

from __future__ import annotations

import captum.attr as ca
import pytest
import torch

import fattr
from tests.multi_input.models import (
    close,
    linear_two,
    multi_input,
    multi_layer,
    relu_linear,
    seeded,
    three_inputs,
)

TARGET = torch.tensor([0, 1, 1, 0])


@pytest.mark.parametrize("method", ["gausslegendre", "riemann_left", "riemann_right"])
@pytest.mark.parametrize("batch_size", [None, 7])
def test_integrated_gradients_tuple_inputs_and_model_args(method, batch_size):
    net = multi_input()
    f, params = fattr.functional(net)
    xs = three_inputs()
    baselines = (0.5, torch.full((3,), -1.0, dtype=torch.float64), None)
    ig = fattr.integrated_gradients(f, steps=12, method=method, batch_size=batch_size)
    ours = ig(params, xs, TARGET, baseline=baselines, model_args=(3,))
    theirs = ca.IntegratedGradients(net).attribute(
        xs, baselines=(0.5, torch.full((1, 3), -1.0, dtype=torch.float64), 0.0),
        target=TARGET, additional_forward_args=(3,), n_steps=12, method=method,
        internal_batch_size=batch_size)
    close(ours, theirs, 1e-6)  # captum rounds its quadrature weights to float32
    gap = fattr.completeness_gap(f, params, xs, ours, TARGET, baselines, model_args=(3,))
    delta = ca.IntegratedGradients(net).attribute(
        xs, baselines=(0.5, torch.full((1, 3), -1.0, dtype=torch.float64), 0.0),
        target=TARGET, additional_forward_args=(3,), n_steps=12, method=method,
        return_convergence_delta=True)[1]
    torch.testing.assert_close(gap, delta, rtol=1e-5, atol=1e-5)


def test_per_example_tensor_argument_follows_its_example():
    """captum repeats a tensor additional argument along the path; fattr's model_kwargs
    `add_input` (one row per example) must follow its example the same way, in any chunk."""
    net = multi_layer()
    f, params = fattr.functional(net)
    x, add = three_inputs(seed=1)[:2]
    theirs = ca.IntegratedGradients(net).attribute(x, target=TARGET, n_steps=10,
                                                   additional_forward_args=(add,))
    for batch_size in (None, 3, 40):
        ig = fattr.integrated_gradients(f, steps=10, batch_size=batch_size)
        ours = ig(params, x, TARGET, model_kwargs={"add_input": add})
        torch.testing.assert_close(ours, theirs, rtol=1e-6, atol=1e-8)
        torch.testing.assert_close(ig(params, x, TARGET, model_args=(add,)), ours, rtol=1e-12,
                                   atol=1e-14)  # the same call, positional


@pytest.mark.parametrize("abs_", [True, False])
def test_saliency_and_input_x_gradient(abs_):
    net = multi_input()
    f, params = fattr.functional(net)
    xs = three_inputs(seed=2)
    close(fattr.saliency(f, abs=abs_)(params, xs, TARGET, model_args=(2,)),
          ca.Saliency(net).attribute(xs, TARGET, abs=abs_, additional_forward_args=(2,)), 1e-12)
    close(fattr.input_x_gradient(f)(params, xs, TARGET, model_args=(2,)),
          ca.InputXGradient(net).attribute(xs, TARGET, additional_forward_args=(2,)), 1e-12)


def test_deeplift_tuple_inputs_and_references():
    net = relu_linear()
    f, params = fattr.functional(net)
    g = seeded(3)
    xs = tuple(torch.randn(4, 3, dtype=torch.float64, generator=g) for _ in range(2))
    refs = tuple(torch.randn(4, 3, dtype=torch.float64, generator=g) * 0.1 for _ in range(2))
    ours = fattr.deeplift(f)(params, xs, None, baseline=refs)
    theirs = ca.DeepLift(net).attribute(xs, baselines=refs)
    close(ours, theirs, 1e-12)
    gap = fattr.completeness_gap(f, params, xs, ours, None, refs)
    torch.testing.assert_close(gap, torch.zeros(4, dtype=torch.float64), atol=1e-12, rtol=0)
    net3 = multi_input()
    f3, p3 = fattr.functional(net3)
    x3 = three_inputs(seed=4)
    close(fattr.deeplift(f3)(p3, x3, TARGET, model_args=(2,)),
          ca.DeepLift(net3).attribute(x3, target=TARGET, additional_forward_args=(2,)), 1e-12)


def test_deeplift_shap_tuple_distributions():
    net = relu_linear()
    f, params = fattr.functional(net)
    g = seeded(5)
    xs = tuple(torch.randn(3, 3, dtype=torch.float64, generator=g) for _ in range(2))
    pools = tuple(torch.randn(4, 3, dtype=torch.float64, generator=g) for _ in range(2))
    ours = fattr.deeplift_shap(f, batch_size=6)(params, xs, None, baselines=pools)
    theirs = ca.DeepLiftShap(net).attribute(xs, baselines=pools)
    close(ours, theirs, 1e-12)


def test_gradient_shap_on_a_linear_model_is_exact():
    """On a linear model every path point has the same gradient, so GradientSHAP with one
    reference per input is (x - b) * w for any random draws: captum's and fattr's agree
    exactly although they draw differently."""
    net = linear_two()
    f, params = fattr.functional(net)
    g = seeded(6)
    xs = (torch.randn(5, 3, dtype=torch.float64, generator=g),
          torch.randn(5, 4, dtype=torch.float64, generator=g))
    pools = (torch.randn(1, 3, dtype=torch.float64, generator=g),
             torch.randn(1, 4, dtype=torch.float64, generator=g))
    ours = fattr.gradient_shap(f, samples=7, batch_size=4)(params, xs, None, baselines=pools,
                                                          generator=seeded(7))
    theirs = ca.GradientShap(net).attribute(xs, baselines=pools, n_samples=7)
    close(ours, theirs, 1e-10)
    w = net.linear.weight[0]
    torch.testing.assert_close(ours[1], (xs[1] - pools[1]) * w[3:])


def test_smoothgrad_tuple_inputs_match_captum_noise_tunnel_without_noise():
    net = multi_input()
    f, params = fattr.functional(net)
    xs = three_inputs(seed=8)
    ours = fattr.smoothgrad(fattr.saliency(f, abs=False), samples=3, stdev=0.0, batch_size=5)(
        params, xs, TARGET, model_args=(2,))
    theirs = ca.NoiseTunnel(ca.Saliency(net)).attribute(
        xs, nt_samples=3, stdevs=0.0, target=TARGET, abs=False, additional_forward_args=(2,))
    close(ours, theirs, 1e-12)


def test_smoothgrad_noise_per_input_and_per_example_arguments():
    """Noisy copies of every input with their per-example arguments: the same as calling the
    wrapped method on the stacked copies one by one."""
    net = multi_layer()
    f, params = fattr.functional(net)
    x, add = three_inputs(seed=9)[:2]
    sg = fattr.smoothgrad(fattr.integrated_gradients(f, steps=4), samples=3, stdev=0.2,
                          batch_size=5)
    got = sg(params, x, TARGET, generator=seeded(1), model_kwargs={"add_input": add},
             baseline=torch.zeros_like(x))
    noise = fattr.core.noise.relative_noise(x, 3, 0.2, seeded(1))
    ig = fattr.integrated_gradients(f, steps=4)
    expected = torch.stack([ig(params, x + n, TARGET, model_kwargs={"add_input": add})
                            for n in noise]).mean(0)
    torch.testing.assert_close(got, expected)


def test_blur_and_guided_integrated_gradients_take_tuples():
    """Each method on (a, b) equals the method on a model that concatenates its inputs."""
    class Two(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = torch.nn.Conv2d(2, 3, 3, padding=1)

        def forward(self, a, b):
            return self.conv(torch.cat([a, b], 1)).tanh().mean((2, 3))

    class One(torch.nn.Module):
        def __init__(self, two):
            super().__init__()
            self.two = two

        def forward(self, ab):
            return self.two(ab[:, :1], ab[:, 1:])

    torch.manual_seed(0)
    two = Two().double().eval()
    f2, p2 = fattr.functional(two)
    f1, p1 = fattr.functional(One(two))
    a, b = (torch.rand(2, 1, 6, 6, dtype=torch.float64, generator=seeded(i)) for i in (1, 2))
    blur2 = fattr.blur_integrated_gradients(f2, steps=8, max_sigma=3.0)(p2, (a, b), 0)
    blur1 = fattr.blur_integrated_gradients(f1, steps=8, max_sigma=3.0)(p1, torch.cat([a, b], 1), 0)
    torch.testing.assert_close(torch.cat(blur2, 1), blur1)
    gig2 = fattr.guided_integrated_gradients(f2, steps=10)(p2, (a, b), 0)
    gig1 = fattr.guided_integrated_gradients(f1, steps=10)(p1, torch.cat([a, b], 1), 0)
    torch.testing.assert_close(torch.cat(gig2, 1), gig1)
