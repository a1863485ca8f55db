"""fattr.perturbation: forward-only perturbation methods over one batched engine."""

from fattr.perturbation.feature_ablation import feature_ablation
from fattr.perturbation.feature_permutation import feature_permutation
from fattr.perturbation.kernel_shap import kernel_shap
from fattr.perturbation.lime import lime
from fattr.perturbation.occlusion import occlusion
from fattr.perturbation.shapley_value_sampling import shapley_value_sampling
from fattr.perturbation.shapley_values import shapley_values

__all__ = ["feature_ablation", "feature_permutation", "kernel_shap", "lime", "occlusion",
           "shapley_value_sampling", "shapley_values"]
