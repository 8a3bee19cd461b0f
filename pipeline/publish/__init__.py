"""pipeline/publish."""
