"""pipeline_dev."""
