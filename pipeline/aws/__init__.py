"""pipeline/aws."""
