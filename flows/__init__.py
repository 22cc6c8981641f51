"""Prefect flows (docs/architecture.md, Stages): compose the tasks of ``tasks/``; deployments, schedules and Dask
fan-out."""
