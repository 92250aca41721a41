"""daefr.kernels (placeholder until its issue lands)."""
