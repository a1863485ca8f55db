"""Layer taps and layer methods: read, perturb or replace a layer's output in a functional call.

The shared machinery (`Tap`, `layer_name`) lives in `fattr.layers.taps`.
"""

from fattr.layers.grid import tokens_to_grid
from fattr.layers.layer_activation import layer_activation
from fattr.layers.layer_gradient_x_activation import layer_gradient_x_activation
from fattr.layers.to_layer import to_layer

__all__ = ["layer_activation", "layer_gradient_x_activation", "to_layer", "tokens_to_grid"]
