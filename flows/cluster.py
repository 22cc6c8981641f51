"""The Dask task runner of the fan-out flows (prefect-dask; README.md, Scaling out).

- ``orchestration.dask_address`` set: connect to that existing scheduler (its workers bring their own GPUs;
  start one worker per GPU there, e.g. ``CUDA_VISIBLE_DEVICES=i dask worker ADDR --nthreads 1``). Workers on
  other machines read and write through ``orchestration.store`` (``tasks.store``).
- else, with CUDA GPUs here: a local cluster of one single-threaded worker per GPU (at most
  ``orchestration.n_workers``), each started with its own ``CUDA_VISIBLE_DEVICES`` so that ``cuda`` in a task
  is that worker's GPU.
- else: a local cluster of ``n_workers`` single-threaded CPU workers sharing the cores (``OMP_NUM_THREADS``
  split between them so they do not oversubscribe).
"""

from __future__ import annotations

import os

from distributed import Nanny, Scheduler, SpecCluster
from prefect_dask import DaskTaskRunner

from eqdiff.config import OrchestrationConfig


def one_gpu_per_worker_cluster(gpus: list[int], asynchronous: bool = False, **kwargs) -> SpecCluster:
    """A local cluster with one Nanny-managed worker per GPU id in ``gpus`` (1 thread each)."""
    workers = {
        f"gpu{gpu}": {
            "cls": Nanny,
            "options": {"nthreads": 1, "env": {"CUDA_VISIBLE_DEVICES": str(gpu), "OMP_NUM_THREADS": "1"}},
        }
        for gpu in gpus
    }
    scheduler = {"cls": Scheduler, "options": {"dashboard_address": ":0"}}
    return SpecCluster(workers=workers, scheduler=scheduler, asynchronous=asynchronous, **kwargs)


def visible_gpus() -> int:
    """CUDA devices this process can see (0 without torch CUDA)."""
    import torch

    return torch.cuda.device_count() if torch.cuda.is_available() else 0


def dask_task_runner(config: OrchestrationConfig, gpus: int | None = None) -> DaskTaskRunner:
    """The task runner for ``config`` (see the module docstring); ``gpus`` defaults to ``visible_gpus()``."""
    if config.dask_address:
        return DaskTaskRunner(address=config.dask_address)
    gpus = visible_gpus() if gpus is None else gpus
    if gpus:
        ids = list(range(min(gpus, config.n_workers)))
        return DaskTaskRunner(cluster_class=one_gpu_per_worker_cluster, cluster_kwargs={"gpus": ids})
    threads = max(1, (os.cpu_count() or 1) // config.n_workers)
    return DaskTaskRunner(
        cluster_kwargs={
            "n_workers": config.n_workers,
            "threads_per_worker": 1,
            "processes": True,
            "dashboard_address": ":0",
            "env": {"OMP_NUM_THREADS": str(threads)},
        }
    )
