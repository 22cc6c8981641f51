"""Reliability suite (docs/robustness.md): bad-input corpus, properties, kill/resume, safe loading and locks."""
