"""Concepts: concept activation vectors (CAVs) and TCAV, with its significance test.

>>> c = fattr.concepts.cav(f, params, "layer3", concept_images, random_images)
>>> fattr.concepts.tcav(f, "layer3", [c])(params, class_images, target=k)      # (1,)
"""

from fattr.concepts.cav import CAV, cav
from fattr.concepts.directional_derivatives import directional_derivatives
from fattr.concepts.tcav import tcav
from fattr.concepts.tcav_significance import Significance, tcav_significance

__all__ = ["CAV", "Significance", "cav", "directional_derivatives", "tcav",
           "tcav_significance"]
