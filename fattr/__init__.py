"""fattr: functional feature attribution for PyTorch on torch.func.

Every method is a constructor that takes a model function and static configuration and returns
a pure attribution function `attr(params, x, target=None, **per_call) -> Tensor`:

>>> f, params = fattr.functional(model.eval())
>>> ig = fattr.integrated_gradients(f, steps=32)
>>> a = ig(params, x, target=labels)
"""

from fattr import lrp, metrics
from fattr.cam import *  # noqa: F403
from fattr.core import functional, per_example, trainable
from fattr.errors import FattrError, FattrTypeError
from fattr.explain import explain
from fattr.gradient import (
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
from fattr.layers import *  # noqa: F403
from fattr.perturbation import *  # noqa: F403
from fattr.rules import *  # noqa: F403

__version__ = "0.1.0"


# Subpackages with optional dependencies (matplotlib, transformers, torch.distributed, ...) are
# imported when first used, so `import fattr` needs only torch, numpy and einops.
_LAZY = ("viz", "llm", "influence", "concepts", "robust", "run")


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        return importlib.import_module(f"fattr.{name}")
    raise AttributeError(f"module 'fattr' has no attribute {name!r}")


__all__ = [
    "FattrError", "FattrTypeError", "blur_integrated_gradients", "completeness_gap", "explain",
    "functional",
    "gradient_shap", "guided_integrated_gradients", "input_x_gradient", "integrated_gradients",
    "lrp", "metrics", "per_example", "saliency", "smoothgrad", "smoothgrad_sq", "trainable",
    "vargrad",
]
