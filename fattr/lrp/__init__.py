"""fattr.lrp: layer-wise relevance propagation (placeholder until the LRP issue lands)."""

__all__: list[str] = []
