"""daefr.runtime (placeholder until its issue lands)."""
