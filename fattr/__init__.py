"""fattr: functional feature attribution for PyTorch on torch.func.

Every method is a constructor that takes a model function and static configuration and returns
a pure attribution function `attr(params, x, target=None, **per_call) -> Tensor`:

>>> f, params = fattr.functional(model.eval())
>>> ig = fattr.integrated_gradients(f, steps=32)
>>> a = ig(params, x, target=labels)
"""

from fattr import lrp, metrics
from fattr.cam import (
    ablationcam,
    cameras,
    eigencam,
    eigengradcam,
    fem,
    fullgrad,
    fullgrad_terms,
    gradcam,
    gradcam_elementwise,
    gradcam_plus_plus,
    guided,
    guided_gradcam,
    hirescam,
    layercam,
    scorecam,
    smooth_gradcam_plus_plus,
    sscam,
    xgradcam,
    xrai,
    xrai_segments,
)
from fattr.core import functional, per_example, trainable
from fattr.errors import FattrError, FattrTypeError
from fattr.explain import explain
from fattr.gradient import (
    adaptive_integrated_gradients,
    blur_integrated_gradients,
    completeness_gap,
    gradient_shap,
    guided_integrated_gradients,
    input_x_gradient,
    integrated_gradients,
    saliency,
    smoothgrad,
    smoothgrad_sq,
    vargrad,
)
from fattr.layers import (
    internal_influence,
    layer_activation,
    layer_conductance,
    layer_deeplift,
    layer_feature_ablation,
    layer_gradient_shap,
    layer_gradient_x_activation,
    layer_integrated_gradients,
    neuron_conductance,
    to_layer,
    tokens_to_grid,
)
from fattr.perturbation import (
    feature_ablation,
    feature_permutation,
    kernel_shap,
    lime,
    occlusion,
    shapley_value_sampling,
    shapley_values,
)
from fattr.rules import (
    deconvnet,
    deeplift,
    deeplift_shap,
    guided_backprop,
    rectgrad,
    rewrite,
)

__version__ = "0.1.0"


# Subpackages with optional dependencies (matplotlib, transformers, torch.distributed, ...) are
# imported when first used, so `import fattr` needs only torch, numpy and einops.
_LAZY = ("viz", "llm", "influence", "concepts", "robust", "run")


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        return importlib.import_module(f"fattr.{name}")
    raise AttributeError(f"module 'fattr' has no attribute {name!r}")


__all__ = [  # every public name (tests/core/test_core.py checks it against dir(fattr))
    "FattrError", "FattrTypeError", "ablationcam", "adaptive_integrated_gradients",
    "blur_integrated_gradients", "cameras",
    "completeness_gap", "deconvnet", "deeplift", "deeplift_shap", "eigencam", "eigengradcam",
    "explain", "feature_ablation", "feature_permutation", "fem", "fullgrad", "fullgrad_terms",
    "functional", "gradcam", "gradcam_elementwise", "gradcam_plus_plus", "gradient_shap", "guided",
    "guided_backprop", "guided_gradcam", "guided_integrated_gradients", "hirescam",
    "input_x_gradient", "integrated_gradients", "internal_influence", "kernel_shap",
    "layer_activation", "layer_conductance", "layer_deeplift", "layer_feature_ablation",
    "layer_gradient_shap", "layer_gradient_x_activation", "layer_integrated_gradients", "layercam",
    "lime", "lrp", "metrics", "neuron_conductance", "occlusion", "per_example", "rectgrad",
    "rewrite", "saliency", "scorecam", "shapley_value_sampling", "shapley_values",
    "smooth_gradcam_plus_plus", "smoothgrad", "smoothgrad_sq", "sscam", "to_layer",
    "tokens_to_grid", "trainable", "vargrad", "xgradcam", "xrai", "xrai_segments",
]
