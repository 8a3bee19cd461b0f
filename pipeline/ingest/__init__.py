"""pipeline/ingest."""
