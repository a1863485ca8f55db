"""torch.compile: compiled equals eager.

`FULLGRAPH` lists every method that compiles with `fullgraph=True` (no graph break, no
warning): each is traced whole by Dynamo (backend "eager", fast); a few also run through
AOTAutograd (`aot_eager`), Grad-CAM through Inductor (tens of seconds of C++ code generation
with a cold cache on CPU, so only that one); the compiled training-loss gradients (second
order) run through AOTAutograd. `WITH_BREAKS` are methods that compile with
graph breaks (custom autograd Functions, generator draws, data-dependent feature ids) and
still give the eager result. The table is in docs/training_losses.md ("torch.compile").
"""

from __future__ import annotations

import warnings

import pytest
import torch

import fattr
from tests.conftest import small_cnn

LAYER = "4"  # small_cnn's second convolution (B, 6, 4, 4)
POOL = torch.rand(3, 1, 8, 8, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
MASK = torch.arange(64).reshape(1, 1, 8, 8) // 16  # four features

FULLGRAPH = {
    "saliency": (fattr.saliency, {}),
    "input_x_gradient": (fattr.input_x_gradient, {}),
    "integrated_gradients": (lambda f: fattr.integrated_gradients(f, steps=8, batch_size=6),
                             {"baseline": 0.1}),
    "integrated_gradients_riemann": (
        lambda f: fattr.integrated_gradients(f, steps=5, method="riemann_trapezoid"), {}),
    "blur_integrated_gradients": (lambda f: fattr.blur_integrated_gradients(f, steps=6), {}),
    "guided_integrated_gradients": (lambda f: fattr.guided_integrated_gradients(f, steps=2),
                                    {}),
    "smoothgrad (generator=None)": (
        lambda f: fattr.smoothgrad(fattr.saliency(f), samples=3), {}),
    "smoothgrad_sq (generator=None)": (
        lambda f: fattr.smoothgrad_sq(fattr.saliency(f), samples=3), {}),
    "vargrad (generator=None)": (lambda f: fattr.vargrad(fattr.saliency(f), samples=3), {}),
    "gradient_shap (generator=None)": (lambda f: fattr.gradient_shap(f, samples=3, stdev=0.1),
                                       {"baselines": POOL}),
    "gradcam": (lambda f: fattr.gradcam(f, LAYER), {}),
    "gradcam_plus_plus": (lambda f: fattr.gradcam_plus_plus(f, LAYER), {}),
    "xgradcam": (lambda f: fattr.xgradcam(f, LAYER), {}),
    "hirescam": (lambda f: fattr.hirescam(f, LAYER), {}),
    "layercam": (lambda f: fattr.layercam(f, LAYER), {}),
    "eigencam": (lambda f: fattr.eigencam(f, LAYER), {}),
    "eigengradcam": (lambda f: fattr.eigengradcam(f, LAYER), {}),
    "gradcam_elementwise": (lambda f: fattr.gradcam_elementwise(f, LAYER), {}),
    "fem": (lambda f: fattr.fem(f, LAYER), {}),
    "scorecam": (lambda f: fattr.scorecam(f, LAYER, batch_size=4), {}),
    "ablationcam": (lambda f: fattr.ablationcam(f, LAYER), {}),
    "sscam (generator=None)": (lambda f: fattr.sscam(f, LAYER, samples=3), {}),
    "smooth_gradcam_plus_plus (generator=None)": (
        lambda f: fattr.smooth_gradcam_plus_plus(f, LAYER, samples=3), {}),
    "fullgrad": (fattr.fullgrad, {}),
    "cameras": (lambda f: fattr.cameras(f, LAYER, scales=(1.0, 1.5)), {}),
    "layer_activation": (lambda f: fattr.layer_activation(f, LAYER), {}),
    "layer_gradient_x_activation": (lambda f: fattr.layer_gradient_x_activation(f, LAYER), {}),
    "layer_integrated_gradients": (
        lambda f: fattr.layer_integrated_gradients(f, LAYER, steps=6), {}),
    "layer_conductance": (lambda f: fattr.layer_conductance(f, LAYER, steps=6), {}),
    "internal_influence": (lambda f: fattr.internal_influence(f, LAYER, steps=6), {}),
    "neuron_conductance": (lambda f: fattr.neuron_conductance(f, LAYER, (0, 1, 1), steps=6), {}),
    "layer_gradient_shap (generator=None)": (
        lambda f: fattr.layer_gradient_shap(f, LAYER, samples=3), {"baselines": POOL}),
    "layer_feature_ablation": (lambda f: fattr.layer_feature_ablation(f, LAYER), {}),
    "guided_backprop (hook)": (lambda f: fattr.guided_backprop(f, mode="hook"), {}),
    "deconvnet (hook)": (lambda f: fattr.deconvnet(f, mode="hook"), {}),
    "rectgrad (hook)": (lambda f: fattr.rectgrad(f, percentile=70.0, mode="hook"), {}),
    "guided (hook guided backprop x gradcam)": (lambda f: fattr.guided(
        fattr.guided_backprop(f, mode="hook"), fattr.gradcam(f, LAYER, upsample=False),
        "nearest"), {}),
    "occlusion": (lambda f: fattr.occlusion(f, (1, 2, 2), stride=(1, 2, 2)), {}),
}
AOT = ["integrated_gradients", "smoothgrad (generator=None)", "layer_integrated_gradients",
       "guided_backprop (hook)"]
INDUCTOR = ["gradcam"]  # a cold Inductor cache costs ~25 s per test here
WITH_BREAKS = {
    "smoothgrad (generator)": (lambda f: fattr.smoothgrad(fattr.saliency(f), samples=3),
                               {"generator": True}),
    "feature_ablation": (fattr.feature_ablation, {"feature_mask": MASK}),
}


@pytest.fixture(scope="module")
def case():
    f, params = fattr.functional(small_cnn())
    x = torch.rand(2, 1, 8, 8, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    return f, params, x, torch.tensor([1, 3])


def call(attr, case, kwargs):
    """attr on the case, from a fixed RNG state (fresh generator or global seed)."""
    _, params, x, target = case
    kwargs = dict(kwargs)
    if kwargs.get("generator"):
        kwargs["generator"] = torch.Generator().manual_seed(5)
    torch.manual_seed(5)
    return attr(params, x, target, **kwargs)


def compiled_equals_eager(name, methods, case, backend, fullgraph):
    make, kwargs = methods[name]
    attr = make(case[0])
    eager = call(attr, case, kwargs)
    torch._dynamo.reset()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        compiled = call(torch.compile(attr, backend=backend, fullgraph=fullgraph), case, kwargs)
    assert eager.abs().sum() > 0
    torch.testing.assert_close(compiled, eager, rtol=1e-9, atol=1e-12)
    return [str(w.message).splitlines()[0] for w in caught]


@pytest.mark.parametrize("name", FULLGRAPH)
def test_fullgraph_compiled_equals_eager(case, name):
    noise = compiled_equals_eager(name, FULLGRAPH, case, "eager", fullgraph=True)
    assert not noise, noise  # no Dynamo warnings about fattr's checks


@pytest.mark.parametrize("name", AOT)
def test_aot_autograd_compiled_equals_eager(case, name):
    compiled_equals_eager(name, FULLGRAPH, case, "aot_eager", fullgraph=True)


@pytest.mark.parametrize("name", INDUCTOR)
def test_inductor_compiled_equals_eager(case, name):
    compiled_equals_eager(name, FULLGRAPH, case, "inductor", fullgraph=True)


@pytest.mark.filterwarnings("ignore::UserWarning")  # Dynamo's notes on the breaks
@pytest.mark.parametrize("name", WITH_BREAKS)
def test_compiled_with_graph_breaks_equals_eager(case, name):
    compiled_equals_eager(name, WITH_BREAKS, case, "aot_eager", fullgraph=False)
    make, kwargs = WITH_BREAKS[name]
    torch._dynamo.reset()
    with pytest.raises(torch._dynamo.exc.TorchDynamoException):
        call(torch.compile(make(case[0]), backend="eager", fullgraph=True), case, kwargs)


@pytest.mark.filterwarnings("ignore::UserWarning")  # Dynamo's notes on the breaks
def test_custom_autograd_functions_run_eagerly_inside_a_compiled_caller():
    """Rules in function mode, DeepLIFT and LRP run custom autograd Functions under a
    TorchFunctionMode, which Dynamo does not trace reliably (it refuses a custom `jvp`; inside
    vmap: pytorch issue 129845): the call runs uncompiled inside a compiled caller (one graph
    break, the eager result); fullgraph=True says so."""
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(6, 8), torch.nn.ReLU(), torch.nn.Linear(8, 3))
    f, params = fattr.functional(net.double().eval())
    x = torch.randn(4, 6, dtype=torch.float64)
    for attr in (fattr.guided_backprop(f), fattr.lrp(f, "epsilon"), fattr.deeplift(f)):
        torch._dynamo.reset()
        caller = lambda p, v, attr=attr: attr(p, v * 1.0, 1).square()  # the caller compiles
        compiled = torch.compile(caller, backend="aot_eager")(params, x)
        torch.testing.assert_close(compiled, caller(params, x), rtol=1e-12, atol=1e-14)
        torch._dynamo.reset()
        with pytest.raises(torch._dynamo.exc.Unsupported, match="torch.compiler.disable"):
            torch.compile(attr, backend="eager", fullgraph=True)(params, x, 1)


@pytest.mark.parametrize("name", ["saliency", "gradcam", "guided_backprop (hook)"])
def test_a_compiled_training_loss_gradient_equals_eager(case, name):
    """torch.compile(torch.func.grad(penalty)): the attribution differentiated in the params
    (second order) inside one compiled graph."""
    f, params, x, target = case
    weights = fattr.trainable(f, params)
    attr = FULLGRAPH[name][0](f)
    penalty = lambda w: attr({**params, **w}, x, target).pow(2).sum()
    eager = torch.func.grad(penalty)(weights)
    torch._dynamo.reset()
    compiled = torch.compile(torch.func.grad(penalty), backend="aot_eager", fullgraph=True)(weights)
    assert sum(g.abs().sum() for g in eager.values()) > 0
    torch.testing.assert_close(compiled, eager, rtol=1e-9, atol=1e-12)


def test_value_checks_are_skipped_only_while_compiling(case):
    """Eager calls still check finiteness; a compiled call skips it (no host sync)."""
    f, params, x, target = case
    bad = x.clone()
    bad[0, 0, 0, 0] = float("nan")
    attr = fattr.saliency(f)
    with pytest.raises(fattr.FattrError, match="saliency: x contains NaN"):
        attr(params, bad, target)
    torch._dynamo.reset()
    out = torch.compile(attr, backend="aot_eager", fullgraph=True)(params, bad, target)
    assert out.shape == x.shape


REGISTRY_FULLGRAPH = ("fullgraph", "fullgraph, hook mode", "fullgraph, generator=None")


def test_the_registry_compile_column_is_what_this_file_checks():
    """Every method the registry marks fullgraph has a fullgraph case here, in the mode its
    column names; every other method is checked with graph breaks below."""
    from fattr.registry import METHODS

    for name, info in METHODS.items():
        keys = {"fullgraph": name, "fullgraph, hook mode": f"{name} (hook",
                "fullgraph, generator=None": f"{name} (generator=None)"}
        if info.compile in REGISTRY_FULLGRAPH:
            assert any(k.startswith(keys[info.compile]) for k in FULLGRAPH), name
        else:
            assert info.compile in ("graph breaks", "eager"), name


@pytest.mark.filterwarnings("ignore::UserWarning")  # Dynamo's notes on the breaks
@pytest.mark.parametrize("name", sorted(
    n for n, info in __import__("fattr.registry").registry.METHODS.items()
    if info.compile in ("graph breaks", "eager")))
def test_every_method_marked_graph_breaks_compiles_and_equals_eager(case, name):
    from fattr.explain import build

    f, params, x, target = case
    options = {"shapley_values": {"feature_mask": MASK}, "xrai": {
        "resize": None, "min_size": 4, "scales": (20,), "min_pixels": 2}}.get(name, {})
    attr, kwargs = build(f, params, x, name, **options)
    seeded = lambda: {**kwargs, "generator": torch.Generator().manual_seed(0)} \
        if "generator" in (attr.contract.keywords or ()) else kwargs
    torch._dynamo.reset()
    compiled = torch.compile(attr, backend="eager")(params, x, target, **seeded())
    torch.testing.assert_close(compiled, attr(params, x, target, **seeded()))
