"""sequence losses (filled in by their family)."""
