"""Classification losses (filled in by the classification family)."""
