"""Deduplication: exact (normalised-text hash) and MinHash LSH near-duplicates with union-find clusters."""
