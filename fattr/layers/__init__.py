"""fattr.layers"""

__all__: list[str] = []
