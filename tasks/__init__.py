"""Prefect tasks, one per pipeline stage, and MLflow tracking (DESIGN §3): thin doors to ``eqdiff`` functions."""
