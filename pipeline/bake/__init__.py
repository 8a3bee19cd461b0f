"""pipeline/bake."""
