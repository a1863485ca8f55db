"""fattr.perturbation: forward-only perturbation methods."""

__all__: list[str] = []
