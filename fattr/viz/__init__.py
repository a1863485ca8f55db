"""fattr.viz: figures (placeholder)."""
