"""Outside-in: a real ``prefect server start`` on a loopback port, ``python -m flows.deploy`` serving the
project's deployments against it, and the benchmark's one-minute cron creating a run that completes on its own
(no manual trigger); ``prefect deployment ls`` and ``prefect flow-run ls`` work against the same server."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

import pytest
import yaml
from support.pipeline_copy import BIN, TINY, make_project_copy, project_env
from support.servers import free_port, stop, wait_healthy

from eqdiff.prep.sample import make_sample_subject

SERVER_START_S = 120  # `prefect server start` migrates a fresh SQLite DB first
SCHEDULED_RUN_S = 420  # next minute boundary + the runner's poll + one tiny benchmark on a shared 2-core box


def scheduled_runs(api_url: str) -> list:
    """Every flow run of the served ``benchmark-nightly`` deployment, read through Prefect's client."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import DeploymentFilter, DeploymentFilterName
    from prefect.settings import PREFECT_API_URL, temporary_settings

    with temporary_settings({PREFECT_API_URL: api_url}), get_client(sync_client=True) as client:
        names = DeploymentFilter(name=DeploymentFilterName(any_=["benchmark-nightly"]))
        return client.read_flow_runs(deployment_filter=names)


@pytest.fixture
def project(tmp_path: Path) -> Path:
    """A project copy whose benchmark is one tiny subject x variant F, scheduled every minute."""
    root = make_project_copy(tmp_path / "project")
    params = yaml.safe_load((root / "params.yaml").read_text())
    for section, values in TINY.items():
        params[section].update(values)
    subject = make_sample_subject(tmp_path / "subjects" / "toy", 2)
    subjects = [{"name": "toy", "dir": str(subject), "class": "toy"}]
    params.update(subjects=subjects, classes={"toy": "toy"}, variants=["F"])
    params["orchestration"].update(n_workers=1, cron="* * * * *", tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}")
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    return root


@pytest.mark.slow
def test_served_benchmark_runs_on_its_schedule_against_a_real_server(project: Path, tmp_path: Path):
    port = free_port()
    api_url = f"http://127.0.0.1:{port}/api"
    home = tmp_path / "prefect-home"
    env = {
        **project_env(project),
        "PREFECT_HOME": str(home),
        "PREFECT_SERVER_DATABASE_CONNECTION_URL": f"sqlite+aiosqlite:///{home / 'prefect.db'}",
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "PREFECT_API_URL": api_url,
        "PREFECT_RUNNER_POLL_FREQUENCY": "2",
        "COLUMNS": "250",  # rich tables of the CLI: no truncated names
    }
    server_log, serve_log = tmp_path / "server.log", tmp_path / "serve.log"
    started = []
    try:
        with server_log.open("w") as out:
            server = subprocess.Popen(
                [str(BIN / "prefect"), "server", "start", "--host", "127.0.0.1", "--port", str(port)],
                cwd=project, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
            )  # fmt: skip
        started.append(server)
        wait_healthy(f"{api_url}/health", server, server_log, SERVER_START_S)
        with serve_log.open("w") as out:
            serving = subprocess.Popen(
                [str(BIN / "python"), "-m", "flows.deploy", "--params", "params.yaml"],
                cwd=project, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
            )  # fmt: skip
        started.append(serving)

        deadline, completed = time.monotonic() + SCHEDULED_RUN_S, []
        while not completed and time.monotonic() < deadline:
            assert serving.poll() is None, f"flows.deploy exited:\n{serve_log.read_text()[-3000:]}"
            runs = scheduled_runs(api_url)
            failed = [r for r in runs if r.state and r.state.is_final() and not r.state.is_completed()]
            assert not failed, f"{failed[0].state}:\n{serve_log.read_text()[-4000:]}"
            completed = [r for r in runs if r.state and r.state.is_completed()]
            time.sleep(3)
        assert completed, f"no scheduled run completed in {SCHEDULED_RUN_S} s:\n{serve_log.read_text()[-4000:]}"
        assert "bulk DML" not in server_log.read_text()
        run = completed[0]
        assert run.auto_scheduled  # created by the server's scheduler from the cron, not by `deployment run`
        assert run.parameters == {"params_file": "params.yaml"}
        assert (project / "runs" / "toy" / "F" / "metrics.json").is_file()
        assert (project / "reports" / "summary.json").is_file()

        listed = subprocess.run(
            [str(BIN / "prefect"), "deployment", "ls"], cwd=project, env=env, capture_output=True, text=True
        )
        assert listed.returncode == 0, listed.stdout + listed.stderr
        for name in ("benchmark/benchmark-nightly", "customize/customize", "sweep/sweep"):
            assert name in listed.stdout
        runs = subprocess.run(
            [str(BIN / "prefect"), "flow-run", "ls", "--state-type", "COMPLETED"],
            cwd=project, env=env, capture_output=True, text=True,
        )  # fmt: skip
        assert runs.returncode == 0 and run.name in runs.stdout, runs.stdout + runs.stderr
    finally:
        for process in reversed(started):
            stop(process)
