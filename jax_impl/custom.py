"""Losses from the seed articles that no library ships (filled in by their family)."""
