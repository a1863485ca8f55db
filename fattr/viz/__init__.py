"""fattr.viz: figures of attributions (matplotlib, the `viz` extra) and token HTML.

`image` draws one map, `grid` several images x several methods, `text` colours tokens as
HTML, `save` writes a figure, `normalize` gives the displayed map as a tensor. matplotlib is
imported only when a figure is made, so `text` and `normalize` work without it.
"""

from fattr.viz.image import grid, image, save
from fattr.viz.normalize import normalize
from fattr.viz.text import text

__all__ = ["grid", "image", "normalize", "save", "text"]
