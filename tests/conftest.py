"""Shared fixtures: tiny real components built offline, a synthetic subject, one CPU thread, one Prefect API.

The suite runs on pytest-xdist workers (scripts/test.sh: ``-n auto --dist loadfile``): each worker process has its
own model cache, Prefect home and temporary Prefect API, and servers take free loopback ports, so workers share
nothing but the repository (read only). Tests under ``tests/e2e/`` drive real servers, other tools' CLIs and
subprocess pipelines: they are marked ``e2e`` here, and the fast tier (``bash scripts/test.sh --fast``) leaves
them and the ``slow`` tests out.
"""

from __future__ import annotations

import os
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
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")

E2E = Path(__file__).parent / "e2e"


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if E2E in item.path.parents:
            item.add_marker(pytest.mark.e2e)


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
