"""fattr.rules"""

__all__: list[str] = []
