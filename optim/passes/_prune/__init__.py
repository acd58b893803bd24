"""_prune layer."""
