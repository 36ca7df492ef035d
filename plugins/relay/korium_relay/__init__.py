"""korium-relay (being built)."""
