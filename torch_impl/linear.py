"""linear_cross_entropy: a linear layer fused with cross entropy (filled in by its family)."""
