"""Every attribution constructor of fattr by name, with what it needs: data, no behaviour.

`METHODS[name]` is a `MethodInfo`; `fattr.explain`, the command line and the demo pick methods
from it, and `tests/run/test_registry.py` checks that it names every public constructor of
`fattr` and nothing else.

`takes` says what the constructor is called with before its keyword options:

| takes | call |
|---|---|
| `"model"` | `build(f)` |
| `"model_layer"` | `build(f, layer)` |
| `"model_layer_neuron"` | `build(f, layer, neuron)` |
| `"model_window"` | `build(f, window)` (occlusion) |
| `"attr_fn"` | `build(attr_fn)`: wraps any attribution function (SmoothGrad family, XRAI) |
| `"attr_fn_cam"` | `build(attr_fn, cam_fn)`: an attribution times an upsampled CAM |

To add a capability column: give `MethodInfo` a field with a default and set it on the rows
that differ from it.

>>> from fattr.registry import METHODS
>>> info = METHODS["gradcam"]
>>> attr = info.build(f, "layer4")          # info.takes == "model_layer"
>>> [name for name, m in METHODS.items() if m.family == "perturbation"]
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from fattr import cam, gradient, layers, perturbation, rules
from fattr.lrp.method import lrp

TAKES = ("model", "model_layer", "model_layer_neuron", "model_window", "attr_fn", "attr_fn_cam")
FAMILIES = ("gradient", "path", "smoothgrad", "rules", "lrp", "cam", "guided", "xrai", "layer",
            "neuron", "perturbation")


@dataclass(frozen=True)
class MethodInfo:
    """One attribution constructor.

    Attributes:
        name: its name, a public attribute of `fattr` (`getattr(fattr, name)`).
        family: one of `FAMILIES` (the documentation page and the demo's grouping).
        build: the constructor itself.
        takes: what it is called with before its options (one of `TAKES`).
        needs_module: the model function must come from `fattr.functional` (it rewrites or taps
            the module tree); a plain `g(params, x)` is refused.
        complete: with one baseline (zero by default) the attribution sums to
            f(x)_t - f(baseline)_t, up to quadrature error or rounding (`fattr.completeness_gap`
            for input attributions; layer attributions sum to the same difference).
        stochastic: the call draws random numbers and takes `generator=`.
        tuple_inputs: x may be a tuple of tensors (a tuple of attributions comes back, or one
            map for CAM and layer methods).
        per_example: built on `fattr.per_example(f)`, it runs under `torch.func.vmap` over
            examples (and equals the batched call when not stochastic).
        grad_x: differentiable in x (a derivative that matches finite differences).
        grad_params: differentiable in the params (the same check).
        compile: "fullgraph" (torch.compile(..., fullgraph=True) traces it whole),
            "fullgraph, hook mode" (with `mode="hook"`), "fullgraph, generator=None" (a
            `generator` draw breaks the graph), "graph breaks" (compiles with breaks at
            data-dependent feature counts) or "eager" (custom autograd Functions under a
            function mode, or host work: the call runs uncompiled inside a compiled caller, one
            graph break). Compiled always equals eager.

    `tests/test_what_composes.py` checks every column against the methods themselves.
    """

    name: str
    family: str
    build: Callable[..., Callable]
    takes: str = "model"
    needs_module: bool = False
    complete: bool = False
    stochastic: bool = False
    tuple_inputs: bool = True
    per_example: bool = True
    grad_x: bool = True
    grad_params: bool = True
    compile: str = "fullgraph"


_ROWS = (
    MethodInfo("saliency", "gradient", gradient.saliency),
    MethodInfo("input_x_gradient", "gradient", gradient.input_x_gradient),
    MethodInfo("integrated_gradients", "path", gradient.integrated_gradients, complete=True),
    MethodInfo("adaptive_integrated_gradients", "path", gradient.adaptive_integrated_gradients,
               complete=True, per_example=False, compile="eager"),
    MethodInfo("gradient_shap", "path", gradient.gradient_shap, stochastic=True,
               compile="fullgraph, generator=None"),
    MethodInfo("blur_integrated_gradients", "path", gradient.blur_integrated_gradients),
    MethodInfo("guided_integrated_gradients", "path", gradient.guided_integrated_gradients,
               grad_x=False, grad_params=False),
    MethodInfo("smoothgrad", "smoothgrad", gradient.smoothgrad, "attr_fn", stochastic=True,
               compile="fullgraph, generator=None"),
    MethodInfo("smoothgrad_sq", "smoothgrad", gradient.smoothgrad_sq, "attr_fn", stochastic=True,
               compile="fullgraph, generator=None"),
    MethodInfo("vargrad", "smoothgrad", gradient.vargrad, "attr_fn", stochastic=True,
               compile="fullgraph, generator=None"),
    MethodInfo("guided_backprop", "rules", rules.guided_backprop, needs_module=True,
               compile="fullgraph, hook mode"),
    MethodInfo("deconvnet", "rules", rules.deconvnet, needs_module=True,
               compile="fullgraph, hook mode"),
    MethodInfo("rectgrad", "rules", rules.rectgrad, needs_module=True,
               compile="fullgraph, hook mode"),
    MethodInfo("deeplift", "rules", rules.deeplift, needs_module=True, complete=True,
               compile="eager"),
    MethodInfo("deeplift_shap", "rules", rules.deeplift_shap, needs_module=True,
               compile="eager"),
    MethodInfo("lrp", "lrp", lrp, needs_module=True, compile="eager"),
    MethodInfo("gradcam", "cam", cam.gradcam, "model_layer", needs_module=True),
    MethodInfo("gradcam_plus_plus", "cam", cam.gradcam_plus_plus, "model_layer",
               needs_module=True),
    MethodInfo("xgradcam", "cam", cam.xgradcam, "model_layer", needs_module=True),
    MethodInfo("hirescam", "cam", cam.hirescam, "model_layer", needs_module=True),
    MethodInfo("layercam", "cam", cam.layercam, "model_layer", needs_module=True),
    MethodInfo("gradcam_elementwise", "cam", cam.gradcam_elementwise, "model_layer",
               needs_module=True),
    MethodInfo("eigencam", "cam", cam.eigencam, "model_layer", needs_module=True),
    MethodInfo("eigengradcam", "cam", cam.eigengradcam, "model_layer", needs_module=True),
    MethodInfo("fem", "cam", cam.fem, "model_layer", needs_module=True),
    MethodInfo("scorecam", "cam", cam.scorecam, "model_layer", needs_module=True),
    MethodInfo("ablationcam", "cam", cam.ablationcam, "model_layer", needs_module=True),
    MethodInfo("smooth_gradcam_plus_plus", "cam", cam.smooth_gradcam_plus_plus, "model_layer",
               needs_module=True, stochastic=True, compile="fullgraph, generator=None"),
    MethodInfo("sscam", "cam", cam.sscam, "model_layer", needs_module=True, stochastic=True,
               compile="fullgraph, generator=None"),
    MethodInfo("cameras", "cam", cam.cameras, "model_layer", needs_module=True, tuple_inputs=False),
    MethodInfo("fullgrad", "cam", cam.fullgrad, needs_module=True, tuple_inputs=False),
    MethodInfo("guided_gradcam", "guided", cam.guided_gradcam, "model_layer", needs_module=True,
               tuple_inputs=False, compile="eager"),
    MethodInfo("guided", "guided", cam.guided, "attr_fn_cam", compile="fullgraph, hook mode",
               tuple_inputs=False),
    MethodInfo("xrai", "xrai", cam.xrai, "attr_fn", tuple_inputs=False, per_example=False,
               grad_x=False, compile="eager"),
    MethodInfo("layer_activation", "layer", layers.layer_activation, "model_layer",
               needs_module=True),
    MethodInfo("layer_gradient_x_activation", "layer", layers.layer_gradient_x_activation,
               "model_layer", needs_module=True),
    MethodInfo("layer_integrated_gradients", "layer", layers.layer_integrated_gradients,
               "model_layer", needs_module=True, complete=True),
    MethodInfo("internal_influence", "layer", layers.internal_influence, "model_layer",
               needs_module=True),
    MethodInfo("layer_conductance", "layer", layers.layer_conductance, "model_layer",
               needs_module=True, complete=True),
    MethodInfo("layer_gradient_shap", "layer", layers.layer_gradient_shap, "model_layer",
               needs_module=True, stochastic=True, compile="fullgraph, generator=None"),
    MethodInfo("layer_deeplift", "layer", layers.layer_deeplift, "model_layer",
               needs_module=True, complete=True, compile="eager"),
    MethodInfo("layer_feature_ablation", "layer", layers.layer_feature_ablation, "model_layer",
               needs_module=True),
    MethodInfo("neuron_conductance", "neuron", layers.neuron_conductance, "model_layer_neuron",
               needs_module=True),
    MethodInfo("occlusion", "perturbation", perturbation.occlusion, "model_window"),
    MethodInfo("feature_ablation", "perturbation", perturbation.feature_ablation,
               compile="graph breaks"),
    MethodInfo("feature_permutation", "perturbation", perturbation.feature_permutation,
               stochastic=True, per_example=False, compile="graph breaks"),
    MethodInfo("shapley_values", "perturbation", perturbation.shapley_values, complete=True,
               compile="graph breaks"),
    MethodInfo("shapley_value_sampling", "perturbation", perturbation.shapley_value_sampling,
               complete=True, stochastic=True, compile="graph breaks"),
    MethodInfo("kernel_shap", "perturbation", perturbation.kernel_shap, complete=True,
               stochastic=True, compile="graph breaks"),
    MethodInfo("lime", "perturbation", perturbation.lime, stochastic=True, compile="graph breaks"),
)

METHODS: dict[str, MethodInfo] = {info.name: info for info in _ROWS}


COLUMNS = {"tuple x": "tuple_inputs", "vmap(per_example)": "per_example",
           "grad wrt x": "grad_x", "grad wrt params": "grad_params"}


def composition_table() -> str:
    """What composes, per method, as a Markdown table (docs/composition.md holds its output;
    tests/test_what_composes.py checks every cell). vmap over targets holds for every method,
    so it is a line above the table."""
    mark = lambda ok: "yes" if ok else "no"
    lines = ["| method | family | " + " | ".join(COLUMNS) + " | torch.compile |",
             "|---|---|" + "---|" * len(COLUMNS) + "---|"]
    for info in _ROWS:
        cells = [mark(getattr(info, field)) for field in COLUMNS.values()]
        lines.append(f"| `{info.name}` | {info.family} | {' | '.join(cells)} | {info.compile} |")
    return "\n".join(lines)


if __name__ == "__main__":
    print(composition_table())
