"""Modified backpropagation: module-tree rewriting and activation rules."""

from fattr.rules.deconvnet import deconvnet
from fattr.rules.deeplift import deeplift
from fattr.rules.deeplift_shap import deeplift_shap
from fattr.rules.guided_backprop import guided_backprop
from fattr.rules.rectgrad import rectgrad
from fattr.rules.rewrite import rewrite

__all__ = ["deconvnet", "deeplift", "deeplift_shap", "guided_backprop", "rectgrad", "rewrite"]
