"""pipeline/image."""
