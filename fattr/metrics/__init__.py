"""fattr.metrics: evaluation of attributions (placeholder)."""
