"""pipeline/lineage."""
