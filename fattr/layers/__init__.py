"""Layer taps and layer methods: read, perturb or replace a layer's output in a functional call.

The shared machinery (`Tap`, `layer_name`) lives in `fattr.layers.taps`; layer gradients along
a path in `fattr.layers.paths`.
"""

from fattr.layers.grid import tokens_to_grid
from fattr.layers.internal_influence import internal_influence
from fattr.layers.layer_activation import layer_activation
from fattr.layers.layer_conductance import layer_conductance
from fattr.layers.layer_deeplift import layer_deeplift
from fattr.layers.layer_feature_ablation import layer_feature_ablation
from fattr.layers.layer_gradient_shap import layer_gradient_shap
from fattr.layers.layer_gradient_x_activation import layer_gradient_x_activation
from fattr.layers.layer_integrated_gradients import layer_integrated_gradients
from fattr.layers.neuron_conductance import neuron_conductance
from fattr.layers.to_layer import to_layer

__all__ = ["internal_influence", "layer_activation", "layer_conductance", "layer_deeplift",
           "layer_feature_ablation", "layer_gradient_shap",
           "layer_gradient_x_activation", "layer_integrated_gradients", "neuron_conductance",
           "to_layer", "tokens_to_grid"]
