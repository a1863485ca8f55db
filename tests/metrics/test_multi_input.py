"""Metrics on models with several inputs and extra forward arguments: parity with captum on its
own multi-input test model, tuple metrics equal to the same metric on the concatenated input,
and per-example forward arguments that follow their example through every chunk."""

from __future__ import annotations

import pytest
import torch
from captum import attr as captum_attr
from captum import metrics as captum_metrics
from captum.testing.helpers.basic_models import BasicModel_MultiLayer_MultiInput
from torch import nn

import fattr

m = fattr.metrics
B, S = 4, 5


def captum_model() -> nn.Module:
    """captum's BasicModel_MultiLayer_MultiInput, forward(x1, x2, x3, scale), in float64 with
    its weights redrawn (its own are all ones, so both outputs move together)."""
    torch.manual_seed(0)
    net = BasicModel_MultiLayer_MultiInput().double().eval()
    with torch.no_grad():
        for p in net.parameters():
            p.copy_(torch.randn_like(p))
    return net


class Concatenated(nn.Module):
    """The same model on ONE input, the concatenation of the three."""

    def __init__(self, net: nn.Module):
        super().__init__()
        self.net = net

    def forward(self, z, scale):
        return self.net(z[:, :3], z[:, 3:6], z[:, 6:], scale)


def inputs(seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    xs = tuple(torch.randn(B, 3, generator=g, dtype=torch.float64) for _ in range(3))
    scale = 0.5 + torch.rand(B, 1, generator=g, dtype=torch.float64)
    return xs, scale, torch.tensor([0, 1, 1, 0])


def draws(size: float, seed: int):
    g = torch.Generator().manual_seed(seed)
    return tuple(size * torch.randn(S, B, 3, generator=g, dtype=torch.float64)
                 for _ in range(3))


def interleaved(perturbations):
    """fattr's (S, B, ...) per input as captum's rows, the sample axis innermost."""
    return tuple(p.transpose(0, 1).reshape(-1, *p.shape[2:]) for p in perturbations)


def scales(kind: str, scale):
    return {"int": 2, "per_example": scale}[kind]


@pytest.mark.parametrize("normalize", [False, True])
@pytest.mark.parametrize("kind", ["int", "per_example"])
def test_infidelity_matches_captum_with_tuples_and_forward_args(normalize, kind):
    net = captum_model()
    f, params = fattr.functional(net)
    xs, scale, target = inputs()
    extra = scales(kind, scale)
    a = fattr.saliency(f, abs=False)(params, xs, target, model_args=(extra,))
    perturbations = draws(1.0, 1)  # large enough to cross the ReLU kinks
    rows = interleaved(perturbations)
    expected = captum_metrics.infidelity(
        net, lambda given: (rows, tuple(x - r for x, r in zip(given, rows))), xs, a,
        additional_forward_args=(extra,), target=target, n_perturb_samples=S,
        normalize=normalize)
    got = m.infidelity(f, params, xs, a, target, perturbations, model_args=(extra,),
                       normalize=normalize)
    assert got.shape == (B,) and bool((expected > 1e-3).any())
    # captum's normalize expands (a - b)^2 into a^2 - 2ab + b^2, which loses digits
    torch.testing.assert_close(got, expected, rtol=1e-7, atol=1e-12 * expected.abs().max())
    chunked = m.infidelity(f, params, xs, a, target, perturbations, model_args=(extra,),
                           normalize=normalize, batch_size=3)
    torch.testing.assert_close(chunked, got, rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("method", ["saliency", "input_x_gradient"])
@pytest.mark.parametrize("kind", ["int", "per_example"])
def test_sensitivity_max_matches_captum_with_tuples_and_forward_args(method, kind):
    net = captum_model()
    f, params = fattr.functional(net)
    xs, scale, target = inputs()
    extra = scales(kind, scale)
    ours = {"saliency": fattr.saliency(f), "input_x_gradient": fattr.input_x_gradient(f)}[method]
    theirs = {"saliency": captum_attr.Saliency,
              "input_x_gradient": captum_attr.InputXGradient}[method](net).attribute
    perturbations = draws(0.5, 2)
    rows = interleaved(perturbations)
    expected = captum_metrics.sensitivity_max(
        theirs, xs, lambda given: tuple(x + r for x, r in zip(given, rows)),
        n_perturb_samples=S, target=target, additional_forward_args=(extra,))
    got = m.sensitivity_max(ours, params, xs, target, perturbations, model_args=(extra,))
    assert got.shape == (B,) and bool((got > 0.1).any())
    torch.testing.assert_close(got, expected, rtol=1e-10, atol=1e-12)
    chunked = m.sensitivity_max(ours, params, xs, target, perturbations, model_args=(extra,),
                                batch_size=2)
    torch.testing.assert_close(chunked, got, rtol=1e-12, atol=1e-14)


class TwoInputs(nn.Module):
    """A smooth model of an image-like and a tabular input with a per-example gate."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.a = nn.Linear(6, 5)
        self.b = nn.Linear(3, 5)
        self.head = nn.Linear(5, 3)

    def forward(self, image, table, *, gate):
        return self.head(torch.tanh(self.a(image.flatten(1)) + gate * self.b(table)))


def test_completeness_of_integrated_gradients_on_tuple_inputs():
    net = TwoInputs().double().eval()
    f, params = fattr.functional(net)
    g = torch.Generator().manual_seed(3)
    xs = (torch.randn(B, 2, 3, generator=g, dtype=torch.float64),
          torch.randn(B, 3, generator=g, dtype=torch.float64))
    gate = torch.rand(B, 1, generator=g, dtype=torch.float64)
    kwargs = {"gate": gate}
    baseline = (0.1, torch.full((3,), -0.2, dtype=torch.float64))
    ig = fattr.integrated_gradients(f, steps=64)(params, xs, 1, baseline=baseline,
                                                 model_kwargs=kwargs)
    error = m.completeness(f, params, xs, ig, 1, baseline, model_kwargs=kwargs)
    assert error.shape == (B,) and bool((error < 1e-8).all()), error
    # a map that misses completeness: the metric is |gap| / |f(x) - f(x')|, gap from the core
    half = tuple(0.5 * a for a in ig)
    gap = fattr.completeness_gap(f, params, xs, half, 1, baseline, model_kwargs=kwargs)
    difference = sum(a.flatten(1).sum(1) for a in ig)  # = f(x) - f(x') up to 1e-8
    torch.testing.assert_close(m.completeness(f, params, xs, half, 1, baseline,
                                              model_kwargs=kwargs),
                               gap.abs() / difference.abs(), rtol=1e-6, atol=0)
    assert bool((m.completeness(f, params, xs, half, 1, baseline, model_kwargs=kwargs)
                 > 0.4).all())


def tuple_and_concatenated():
    net = captum_model()
    f, params = fattr.functional(net)
    g_cat, p_cat = fattr.functional(Concatenated(net))
    xs, scale, target = inputs()
    a = tuple(torch.randn(B, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(i))
              for i in range(3))
    return (f, params, xs, a), (g_cat, p_cat, torch.cat(xs, 1), torch.cat(a, 1)), scale, target


CURVES = {
    "deletion": lambda f, p, x, a, t, base, **k: m.deletion(f, p, x, a, t, steps=7,
                                                             baseline=base, **k),
    "insertion": lambda f, p, x, a, t, base, **k: m.insertion(f, p, x, a, t, steps=7,
                                                               baseline=base, **k),
    "pixel_flipping": lambda f, p, x, a, t, base, **k: m.pixel_flipping(f, p, x, a, t, steps=9,
                                                                         baseline=base, **k),
}


@pytest.mark.parametrize("name", CURVES)
def test_curves_rank_all_inputs_together(name):
    """A curve on a tuple x equals the same curve on the model of the concatenated input:
    features of all inputs are ranked together and each input gets its own baseline."""
    (f, params, xs, a), (g, p_cat, z, a_cat), scale, target = tuple_and_concatenated()
    bases = (torch.full((3,), 0.3, dtype=torch.float64), -0.5,
             torch.linspace(-1, 1, 3, dtype=torch.float64))
    base_cat = torch.cat([bases[0], torch.full((3,), -0.5, dtype=torch.float64), bases[2]])
    metric = CURVES[name]
    got = metric(f, params, xs, a, target, bases, model_args=(scale,))
    expected = metric(g, p_cat, z, a_cat, target, base_cat, model_args=(scale,))
    assert got.shape == (B,)
    torch.testing.assert_close(got, expected, rtol=1e-12, atol=1e-12)
    # the ranking matters: reversing it changes the area
    worse = metric(f, params, xs, tuple(-t for t in a), target, bases, model_args=(scale,))
    assert not torch.allclose(worse, got)


def test_selectivity_and_randomization_on_tuples_equal_the_concatenated_model():
    (f, params, xs, _), (g, p_cat, z, _), scale, target = tuple_and_concatenated()
    ours = m.selectivity(f, params, xs, fattr.saliency(f, abs=False), target, steps=4,
                         per_step=2, fill=(0.0, 0.5, -1.0), model_args=(scale,))
    fill = torch.tensor([0.0] * 3 + [0.5] * 3 + [-1.0] * 3, dtype=torch.float64)
    theirs = m.selectivity(g, p_cat, z, fattr.saliency(g, abs=False), target, steps=4,
                           per_step=2, fill=fill, model_args=(scale,))
    torch.testing.assert_close(ours, theirs, rtol=1e-12, atol=1e-12)
    layers = ["model.linear2", "model.linear1", "model.linear0"]
    seeded = lambda: torch.Generator().manual_seed(0)
    method = lambda f: fattr.input_x_gradient(f)
    sim = m.model_randomization(f, params, xs, target, method, seeded(), layers=layers,
                                model_args=(scale,))
    sim_cat = m.model_randomization(g, p_cat, z, target, method, seeded(),
                                    layers=[f"net.{name}" for name in layers],
                                    model_args=(scale,))
    assert sim.shape == (3, B)
    torch.testing.assert_close(sim, sim_cat, rtol=1e-12, atol=1e-12)
    auto = m.model_randomization(f, params, xs, target, method, seeded(), model_args=(scale,))
    torch.testing.assert_close(auto, sim)  # the layer order is found with the forward args


def test_complexity_of_a_tuple_is_that_of_the_concatenation():
    maps = (torch.randn(3, 2, 4, dtype=torch.float64), torch.randn(3, 5, dtype=torch.float64))
    joined = torch.cat([t.flatten(1) for t in maps], 1)
    for metric in (m.sparseness, m.complexity):
        torch.testing.assert_close(metric(maps), metric(joined))


def moves(size: float, seed: int):
    """Perturbations (S, B, ...) of the two inputs of TwoInputs."""
    g = torch.Generator().manual_seed(seed)
    return tuple(size * torch.randn(S, B, *shape, generator=g, dtype=torch.float64)
                 for shape in ((2, 3), (3,)))


PER_EXAMPLE = {  # (f, params, x, a, target, part, **kwargs); part narrows (S, B, ...) draws
    "deletion": lambda f, p, x, a, t, part, **k: m.deletion(f, p, x, a, t, steps=5, **k),
    "insertion": lambda f, p, x, a, t, part, **k: m.insertion(f, p, x, a, t, steps=5, **k),
    "pixel_flipping": lambda f, p, x, a, t, part, **k: m.pixel_flipping(
        f, p, x, a, t, steps=5, baseline=0.1, **k),
    "infidelity": lambda f, p, x, a, t, part, **k: m.infidelity(
        f, p, x, a, t, part(moves(0.3, 4)), **k),
    "completeness": lambda f, p, x, a, t, part, batch_size=None, **k: m.completeness(
        f, p, x, a, t, **k),
    "selectivity": lambda f, p, x, a, t, part, **k: m.selectivity(
        f, p, x, fattr.saliency(f), t, steps=3, **k),
    "sensitivity_max": lambda f, p, x, a, t, part, **k: m.sensitivity_max(
        fattr.saliency(f), p, x, t, part(moves(0.3, 5)), **k),
    "model_randomization": lambda f, p, x, a, t, part, batch_size=None, **k:
        m.model_randomization(f, p, x, t, fattr.saliency, torch.Generator().manual_seed(0),
                              **k).T,
}


@pytest.mark.parametrize("name", PER_EXAMPLE)
def test_per_example_arguments_follow_their_example(name):
    """Tuple inputs with a per-example keyword argument (the gate): each example gets the value
    it gets when run alone, whatever the chunking; the gate reaches the model."""
    net = TwoInputs().double().eval()
    f, params = fattr.functional(net)
    g = torch.Generator().manual_seed(7)
    x = (torch.randn(B, 2, 3, generator=g, dtype=torch.float64),
         torch.randn(B, 3, generator=g, dtype=torch.float64))
    a = tuple(torch.randn(t.shape, generator=g, dtype=torch.float64) for t in x)
    gate = torch.rand(B, 1, generator=g, dtype=torch.float64)
    target = torch.tensor([2, 0, 1, 2])
    metric = PER_EXAMPLE[name]
    every = lambda values: values
    batched = metric(f, params, x, a, target, every, model_kwargs={"gate": gate})
    alone = []
    for i in range(B):
        pick = lambda values, i=i: tuple(v[i:i + 1] for v in values)
        part = lambda values, i=i: tuple(v[:, i:i + 1] for v in values)
        alone.append(metric(f, params, pick(x), pick(a), target[i:i + 1], part,
                            model_kwargs={"gate": gate[i:i + 1]}))
    torch.testing.assert_close(batched, torch.cat(alone), rtol=1e-10, atol=1e-12)
    for batch_size in (1, 3):
        chunked = metric(f, params, x, a, target, every, model_kwargs={"gate": gate},
                         batch_size=batch_size)
        torch.testing.assert_close(chunked, batched, rtol=1e-10, atol=1e-12)
    shared = metric(f, params, x, a, target, every, model_kwargs={"gate": gate[:1]})
    assert not torch.allclose(shared, batched)  # the gate reaches the model


@pytest.mark.parametrize("call, match", [
    (lambda f, p, xs, a: m.road(f, p, xs, a, 0), "road: x is a tuple of 3 inputs, but ROAD "
     "imputes the pixels of ONE image"),
    (lambda f, p, xs, a: m.pointing_game(a, torch.ones(B, 3, dtype=torch.bool)),
     "pointing_game: attribution is a tuple of 3 maps"),
    (lambda f, p, xs, a: m.relevance_mass(a, torch.ones(B, 3)),
     "relevance_mass: attribution is a tuple of 3 maps"),
    (lambda f, p, xs, a: m.deletion(f, p, xs, a[0], 0, model_args=(2,)),
     "deletion: x is a tuple of 3 inputs, so attribution must be a tuple with one tensor per "
     "input"),
    (lambda f, p, xs, a: m.infidelity(f, p, xs, a[:2], 0, model_args=(2,)),
     "infidelity: x is a tuple of 3 inputs, so attribution must be a tuple with one tensor per "
     "input, got a tuple of 2"),
    (lambda f, p, xs, a: m.insertion(f, p, xs, (a[0], a[1], a[2][:, :2]), 0, model_args=(2,)),
     "insertion: attribution\\[2\\] has shape \\(4, 2\\) but x\\[2\\] has shape \\(4, 3\\)"),
    (lambda f, p, xs, a: m.infidelity(f, p, xs, a, 0, torch.zeros(S, B, 3), model_args=(2,)),
     "infidelity: x is a tuple of 3 inputs, so perturbations must be a tuple"),
    (lambda f, p, xs, a: m.infidelity(f, p, xs, a, 0, (draws(1, 0)[0], draws(1, 0)[1],
                                                        draws(1, 0)[2][:2]), model_args=(2,)),
     "infidelity: the perturbations of the inputs have \\[2, 5\\] samples"),
    (lambda f, p, xs, a: m.deletion(f, p, xs, a, 0, baseline=torch.zeros(3), model_args=(2,)),
     "deletion: x is a tuple of 3 inputs, so baseline must be a tuple"),
    (lambda f, p, xs, a: m.sensitivity_max(fattr.saliency(f), p, xs, 0, torch.zeros(S, B, 3),
                                           model_args=(2,)),
     "sensitivity_max: x is a tuple of 3 inputs, so perturbations must be a tuple"),
    (lambda f, p, xs, a: m.deletion(f, p, xs, a, 0, model_args=2),
     "deletion: model_args must be a tuple"),
])
def test_tuple_errors(call, match):
    (f, params, xs, a), _, _, _ = tuple_and_concatenated()
    with pytest.raises(fattr.FattrError, match=match):
        call(f, params, xs, a)


def test_per_example_model_with_tuple_inputs():
    """fattr.per_example(f) with a tuple of inputs: one example in, one value out, equal to
    the batched value."""
    net = captum_model()
    f, params = fattr.functional(net)
    one = fattr.per_example(f)
    xs, _, target = inputs()
    a = fattr.saliency(f, abs=False)(params, xs, target, model_args=(2,))
    moves = draws(0.5, 6)
    batched = {
        "deletion": m.deletion(f, params, xs, a, target, steps=4, model_args=(2,)),
        "infidelity": m.infidelity(f, params, xs, a, target, moves, model_args=(2,)),
        "sensitivity_max": m.sensitivity_max(fattr.saliency(f), params, xs, target, moves,
                                             model_args=(2,)),
        "selectivity": m.selectivity(f, params, xs, fattr.saliency(f), target, steps=3,
                                     model_args=(2,)),
        "completeness": m.completeness(f, params, xs, a, target, model_args=(2,)),
    }
    for i in range(B):
        x_i, a_i, d_i = (tuple(t[i] for t in xs), tuple(t[i] for t in a),
                         tuple(t[:, i] for t in moves))
        single = {
            "deletion": m.deletion(one, params, x_i, a_i, target[i], steps=4, model_args=(2,)),
            "infidelity": m.infidelity(one, params, x_i, a_i, target[i], d_i, model_args=(2,)),
            "sensitivity_max": m.sensitivity_max(fattr.saliency(one), params, x_i, target[i],
                                                 d_i, model_args=(2,)),
            "selectivity": m.selectivity(one, params, x_i, fattr.saliency(one), target[i],
                                         steps=3, model_args=(2,)),
            "completeness": m.completeness(one, params, x_i, a_i, target[i], model_args=(2,)),
        }
        for name, value in single.items():
            assert value.shape == (), name
            torch.testing.assert_close(value, batched[name][i], rtol=1e-10, atol=1e-12)
