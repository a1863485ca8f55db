"""fattr.cam"""

__all__: list[str] = []
