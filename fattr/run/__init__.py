"""Dataset-scale attribution, the command line and the demo.

`fattr attribute` (`fattr.run.attribute`) writes safetensors shards and a JSON index;
`fattr.run.load(out_dir)` reads them back as `{path relative to --inputs: Tensor}`.
"""

from fattr.run.store import load

__all__ = ["load"]
