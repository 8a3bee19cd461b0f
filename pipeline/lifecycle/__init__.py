"""pipeline/lifecycle."""
