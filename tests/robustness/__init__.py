"""Reliability suite (DESIGN §6): bad-input corpus, properties, kill/resume, safe loading and locks."""
