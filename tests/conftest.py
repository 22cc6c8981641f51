"""Shared fixtures: tiny real components built offline, a synthetic subject, one CPU thread, one Prefect API.

The suite runs on pytest-xdist workers (scripts/test.sh: ``-n auto --dist loadfile``): each worker process has its
own model cache, Prefect home and temporary Prefect API, and servers take free loopback ports, so workers share
nothing but the repository (read only). Tests under ``tests/e2e/`` drive real servers, other tools' CLIs and
subprocess pipelines: they are marked ``e2e`` here, and the fast tier (``bash scripts/test.sh --fast``) leaves
them and the ``slow`` tests out.
"""

from __future__ import annotations

import atexit
import os
import shutil
import tempfile
from pathlib import Path

import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("DIFFUSERS_VERBOSITY", "error")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
torch.set_num_threads(1)  # tiny tensors are overhead-bound; more threads only oversubscribe 2-core CI
# Each worker process its own Prefect home: flows run without a server use a local SQLite database there, which two
# workers must not share. Set before anything imports prefect (it reads its settings once).
os.environ["PREFECT_HOME"] = tempfile.mkdtemp(prefix=f"prefect-home-{os.environ.get('PYTEST_XDIST_WORKER', 'main')}-")
atexit.register(shutil.rmtree, os.environ["PREFECT_HOME"], True)  # the worker's, removed when it exits
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")

# A flow run without PREFECT_API_URL (the sweep's, a subprocess's) starts a temporary server: 20 s, Prefect's
# default wait, is too short on 2 loaded cores.
os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "180")

TESTS = Path(__file__).parent
# The longest files first (minutes each on 2 cores): with `--dist loadfile` a worker takes the next file when it is
# free, so the long ones start at once and the short ones fill in beside them instead of trailing at the end.
LONGEST_FIRST = (
    "e2e/test_sweep.py",
    "e2e/test_cluster.py",
    "e2e/test_dvc_pipeline.py",
    "world/test_world_model.py",
    "e2e/test_prefect_server.py",
    "e2e/test_sweep_queue_workers.py",
    "pipelines/test_fast_paths.py",
    "pipelines/test_eqdiff_pipeline.py",
    "robustness/test_kill_resume.py",
    "e2e/test_flows.py",
    "models/test_device_placement.py",
    "robustness/test_tracking_killed.py",
    "robustness/test_corpus.py",
)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if TESTS / "e2e" in item.path.parents:
            item.add_marker(pytest.mark.e2e)

    def rank(item: pytest.Item) -> int:
        name = item.path.relative_to(TESTS).as_posix() if TESTS in item.path.parents else ""
        return LONGEST_FIRST.index(name) if name in LONGEST_FIRST else len(LONGEST_FIRST)

    items.sort(key=rank)  # stable: each file keeps its own order


@pytest.fixture(scope="session", autouse=True)
def _eqdiff_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Build the tiny preset once per session in a private cache."""
    cache = tmp_path_factory.mktemp("eqdiff-cache")
    os.environ["EQDIFF_CACHE"] = str(cache)
    return cache


@pytest.fixture
def tiny_components():
    """Fresh tiny-preset components (loaded from the saved directory, like a real checkpoint)."""
    from eqdiff.config import ModelConfig
    from eqdiff.models.components import load_components

    return load_components(ModelConfig())


@pytest.fixture
def subject_dir(tmp_path: Path) -> Path:
    """Three synthetic photos of one toy, with masks in ``masks/``."""
    from eqdiff.prep.sample import make_sample_subject

    return make_sample_subject(tmp_path / "toy", num_photos=3)


@pytest.fixture(scope="session")
def prefect_api():
    """One temporary Prefect API (server and SQLite database) per worker, shared by every test that runs flows."""
    from prefect.testing.utilities import prefect_test_harness

    # 30 s, the harness's default, is too short for a fresh SQLite migration beside another worker on 2 cores.
    with prefect_test_harness(server_startup_timeout=180):
        yield
