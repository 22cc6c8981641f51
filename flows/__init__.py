"""Prefect flows (DESIGN §3): compose the tasks of ``tasks/``; deployments, schedules and Dask fan-out."""
