"""Prefect tasks, one per pipeline stage, and MLflow tracking (docs/architecture.md, Stages): thin doors to ``eqdiff``
functions."""
