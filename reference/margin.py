"""margin losses (filled in by their family)."""
