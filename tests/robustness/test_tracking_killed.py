"""A tracking process that dies leaves no MLflow run RUNNING (read back through mlflow's own client).

``python -m tasks.tracking`` runs for real in a child process against a SQLite store; the only change is a slow
artifact upload (``_log_artifacts`` sleeps after uploading), which gives the test time to signal it mid-run.
SIGTERM and SIGINT end its runs as KILLED; after a SIGKILL nothing can, so the next tracking run closes them.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from support.evaluations import write_evaluation

REPO = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.slow  # processes signalled mid-run: a minute each, left out of the fast tier

SLOW_MAIN = """
import signal, sys, time
# SIGINT as a terminal's foreground process has it: a child inherits an ignored SIGINT (from a test runner or a
# shell's background job), and Python then never raises KeyboardInterrupt.
signal.signal(signal.SIGINT, signal.default_int_handler)
import tasks.tracking as tracking
upload = tracking._log_artifacts
def slow(*args):
    upload(*args)
    open("uploaded", "w").close()  # tells the test the process is now in the slow part
    time.sleep(120)  # a slow artifact store: the test signals the process here
tracking._log_artifacts = slow
sys.exit(tracking.main(sys.argv[1:]))
"""


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> str:
    """One SQLite store for the module (creating its schema is most of the cost), one experiment per test."""
    from mlflow.tracking import MlflowClient

    uri = f"sqlite:///{tmp_path_factory.mktemp('mlflow') / 'mlflow.db'}"
    MlflowClient(tracking_uri=uri).search_experiments()
    return uri


def _layout(root: Path, uri: str) -> tuple[Path, Path, str]:
    subject = root / "data" / "toy"
    subject.mkdir(parents=True)
    write_evaluation(root / "runs" / "toy" / "F", "x")
    params = {
        "subjects": [{"name": "toy", "dir": str(subject), "class": "toy"}],
        "classes": {"toy": "toy"},
        "variants": ["F"],
        "orchestration": {"tracking_uri": uri, "experiment": root.name},
    }
    (root / "params.yaml").write_text(json.dumps(params))  # JSON is YAML
    return root / "params.yaml", root / "runs", uri


def _runs(uri: str, experiment: str) -> list:
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=uri)
    experiment = client.get_experiment_by_name(experiment)
    return [] if experiment is None else client.search_runs([experiment.experiment_id])


def _start(root: Path, params: Path, runs: Path, uri: str) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    argv = [
        sys.executable,
        "-c",
        SLOW_MAIN,
        "--params",
        str(params),
        "--runs",
        str(runs),
        "--out",
        str(root / "o.json"),
    ]
    child = subprocess.Popen(argv, cwd=root, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:  # until the nested run has uploaded its artifacts (then it sleeps)
        nested = [
            r for r in _runs(uri, root.name) if "mlflow.parentRunId" in r.data.tags and r.info.status == "RUNNING"
        ]
        if nested and child.poll() is None and (root / "uploaded").exists():
            return child
        assert child.poll() is None, child.communicate()
        time.sleep(0.2)
    child.kill()
    pytest.fail("the tracking process never reached its nested run")


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_signalled_tracking_ends_its_runs_killed(signum, tmp_path, store):
    params, runs, uri = _layout(tmp_path, store)
    child = _start(tmp_path, params, runs, uri)
    child.send_signal(signum)
    _, err = child.communicate(timeout=60)
    assert child.returncode == 130, err
    assert "Traceback" not in err and "KILLED" in err.strip().splitlines()[-1], err
    statuses = sorted(r.info.status for r in _runs(uri, tmp_path.name))
    assert statuses == ["KILLED", "KILLED"], statuses  # the parent and its nested run


def test_next_tracking_run_closes_runs_of_a_sigkilled_one(tmp_path, store):
    from eqdiff.config import load_params
    from tasks.tracking import log_pipeline

    params, runs, uri = _layout(tmp_path, store)
    child = _start(tmp_path, params, runs, uri)
    child.kill()
    child.communicate(timeout=60)
    before = _runs(uri, tmp_path.name)
    stale = {r.info.run_id for r in before}
    assert {r.info.status for r in before} == {"RUNNING"} and len(stale) == 2
    result = log_pipeline(load_params(params), runs)
    by_id = {r.info.run_id: r.info.status for r in _runs(uri, tmp_path.name)}
    assert {by_id[run_id] for run_id in stale} == {"KILLED"}
    assert by_id[result["parent_run_id"]] == "FINISHED"
