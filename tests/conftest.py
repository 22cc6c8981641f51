"""Shared fixtures: tiny real components built offline, a synthetic subject, one CPU thread, one Prefect API.

The suite runs on pytest-xdist workers (scripts/test.sh: one more worker than cores, ``--dist loadgroup``; see
``pytest_collection_modifyitems``): each worker process has its own model cache, Prefect home and temporary
Prefect API, and servers take free loopback ports, so workers share nothing but the repository (read only).
Tests under ``tests/e2e/`` drive real servers, other tools' CLIs and subprocess pipelines: they are marked ``e2e``
here, and the fast tier (``bash scripts/test.sh --fast``) leaves them and the ``slow`` tests out.
"""

from __future__ import annotations

import atexit
import os
import re
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
# The longest files first (minutes each on 2 cores), by their time in the last full run: the long ones start at
# once and the short tests fill in beside them instead of trailing at the end. scripts/test.sh keeps this order
# (`--no-loadscope-reorder`: pytest-xdist would otherwise put the files with the most tests first).
LONGEST_FIRST = (
    "e2e/test_sweep.py",
    "e2e/test_dvc_pipeline.py",
    "e2e/test_cluster.py",
    "e2e/test_prefect_server.py",
    "pipelines/test_eqdiff_pipeline.py",
    "pipelines/test_fast_paths.py",
    "robustness/test_kill_resume.py",
    "e2e/test_gpu_check.py",
    "e2e/test_flows.py",
    "world/test_world_model.py",
    "prep/test_mask_refine.py",
    "e2e/test_sweep_queue_workers.py",
    "stages/test_stage_layer.py",
    "world/test_world_evaluators.py",
    "bench/test_bench.py",
    "robustness/test_tracking_killed.py",
    "models/test_check_models.py",
    "models/test_device_placement.py",
    "robustness/test_corpus.py",
)
WIDE_SCOPES = {"module", "class", "package"}
_WIDE_FIXTURE = re.compile(r'scope="(module|class|package)"')
SHARED_FIXTURE_FILES = frozenset(
    path.relative_to(TESTS).as_posix()
    for path in TESTS.rglob("test_*.py")
    if _WIDE_FIXTURE.search(path.read_text(encoding="utf-8"))
)
"""Test files that define a module- (or class-) scoped fixture: the DVC demo project, a trained concept, a cluster
of servers. Their tests run on one worker, so the fixture is built once (``GroupedScheduling``)."""


def pytest_xdist_make_scheduler(config: pytest.Config, log):
    """``--dist loadgroup`` (scripts/test.sh) as ``GroupedScheduling``: pytest-xdist's own groups rename node ids,
    which pytest 9 no longer reads (its ``loadgroup`` then splits every file), so the groups are made here."""
    if config.getvalue("dist") != "loadgroup":
        return None
    from xdist.scheduler import LoadScopeScheduling

    class GroupedScheduling(LoadScopeScheduling):
        """Each test is its own unit of work, so short tests fill whichever worker is free (one unit per file,
        ``--dist loadfile``, left a worker's next file queued behind its longest test), except the tests of a
        ``SHARED_FIXTURE_FILES`` file, which form one unit. Units go out in collection order: the longest first
        (``LONGEST_FIRST``, kept by ``--no-loadscope-reorder``)."""

        def _split_scope(self, nodeid: str) -> str:
            file = nodeid.split("::", 1)[0]
            return file if file.removeprefix("tests/") in SHARED_FIXTURE_FILES else nodeid

    return GroupedScheduling(config, log)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark ``e2e`` tests and put the longest files first; a test whose module- or class-scoped fixture comes from
    elsewhere (a conftest) must be in a ``SHARED_FIXTURE_FILES`` file, or the scheduler would build it per test."""
    for item in items:
        if TESTS / "e2e" in item.path.parents:
            item.add_marker(pytest.mark.e2e)
        definitions = getattr(item, "_fixtureinfo", None)
        scopes = {d.scope for defs in (definitions.name2fixturedefs.values() if definitions else ()) for d in defs}
        name = item.path.relative_to(TESTS).as_posix() if TESTS in item.path.parents else ""
        if scopes & WIDE_SCOPES and name not in SHARED_FIXTURE_FILES:
            raise pytest.UsageError(f"{name}: uses a module-scoped fixture defined elsewhere; group it in conftest.py")

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
