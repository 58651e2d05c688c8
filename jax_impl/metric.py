"""metric losses (filled in by their family)."""
