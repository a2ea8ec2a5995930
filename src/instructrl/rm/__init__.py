"""Reward model from rankings: K-way loss, importers for real preference data, normalization, scoring."""
