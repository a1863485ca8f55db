"""Modified backpropagation: module-tree rewriting and activation rules."""

from fattr.rules.guided_backprop import guided_backprop
from fattr.rules.rewrite import rewrite

__all__ = ["guided_backprop", "rewrite"]
