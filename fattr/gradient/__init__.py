"""Gradient and path methods."""

from fattr.gradient.adaptive_integrated_gradients import adaptive_integrated_gradients
from fattr.gradient.blur_integrated_gradients import blur_integrated_gradients
from fattr.gradient.completeness import completeness_gap
from fattr.gradient.gradient_shap import gradient_shap
from fattr.gradient.guided_integrated_gradients import guided_integrated_gradients
from fattr.gradient.input_x_gradient import input_x_gradient
from fattr.gradient.integrated_gradients import integrated_gradients
from fattr.gradient.saliency import saliency
from fattr.gradient.smoothgrad import smoothgrad, smoothgrad_sq, vargrad

__all__ = ["adaptive_integrated_gradients", "blur_integrated_gradients", "completeness_gap",
           "gradient_shap", "guided_integrated_gradients", "input_x_gradient",
           "integrated_gradients", "saliency", "smoothgrad", "smoothgrad_sq", "vargrad"]
