"""Modified backpropagation: module-tree rewriting and activation rules.

The methods are exported at the top level (`fattr.guided_backprop`, ...). The rule objects
live here for use with `fattr.rewrite`, e.g. `fattr.rewrite(model, {nn.ReLU: GUIDED})`:
`GUIDED`, `DECONV`, `rectgrad_rule(percentile)` and `deeplift_rule(eps)`.
"""

from fattr.rules.deconvnet import DECONV as DECONV
from fattr.rules.deconvnet import deconvnet
from fattr.rules.deeplift import deeplift
from fattr.rules.deeplift import deeplift_rule as deeplift_rule
from fattr.rules.deeplift_shap import deeplift_shap
from fattr.rules.guided_backprop import GUIDED as GUIDED
from fattr.rules.guided_backprop import guided_backprop
from fattr.rules.rectgrad import rectgrad
from fattr.rules.rectgrad import rectgrad_rule as rectgrad_rule
from fattr.rules.rewrite import rewrite

__all__ = ["deconvnet", "deeplift", "deeplift_shap", "guided_backprop", "rectgrad", "rewrite"]
