"""The benchmark past one machine, on loopback, outside-in: every service a separate process started with its
own CLI, as on a team's GPU boxes (README "Scaling out").

- ``prefect server start`` and ``mlflow server`` (SQLite backend, artifacts served from its own root) on
  loopback ports; ``dask scheduler`` and two ``dask worker`` processes, each in its own empty working
  directory with its own model cache and Prefect home (another machine);
- ``python -m flows.benchmark -S orchestration.dask_address=... -S orchestration.store=... -S
  orchestration.tracking_uri=http://...`` from a checkout whose params name relative subject folders and
  prompt files: 2 subjects x variant F (two trains at once, one per worker; the local cluster's fan-out over
  variants is test_flows.py's);
- every artefact is read from the store only, the MLflow runs through the server's REST API (their artifacts
  uploaded through it), the task runs and their log lines from the Prefect server;
- a second run loses a worker (SIGKILL of its whole process group) during ``train``: Dask reschedules, the
  surviving worker resumes the stage from its checkpoint in the store, and every output equals the
  uninterrupted run's.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
from support.pipeline_copy import BIN, TINY, make_project_copy, project_env
from support.servers import free_port, stop, wait_healthy

from eqdiff.io.run_layout import RunLayout
from eqdiff.prep.sample import make_sample_subject

SERVER_START_S = 120  # `prefect server start` migrates a fresh SQLite DB first
WORKER_START_S = 90  # a worker imports torch, diffusers and the tasks before registering
BENCHMARK_S = 420  # one benchmark of 2 tiny runs on a shared 2-core box
SUBJECTS, VARIANTS = ("toy_a", "toy_b"), ("F",)
# 8 steps with a checkpoint every 2: a window to lose a worker after a checkpoint and before the end.
SETTINGS = {**TINY, "train": {**TINY["train"], "steps": 8, "checkpointing_steps": 2}}
# Each "machine" sees no GPU here: both runs must compute on the same device to compare byte for byte.
NO_GPU = {"CUDA_VISIBLE_DEVICES": ""}


@dataclass
class Cluster:
    root: Path
    prefect_api: str
    mlflow_uri: str
    scheduler: str
    workers: dict[str, subprocess.Popen]
    project: Path

    def env(self, home: Path) -> dict[str, str]:
        """A machine's environment: its own Prefect home and model cache under ``home``."""
        (home / "prefect").mkdir(parents=True, exist_ok=True)
        return {
            **project_env(self.project),
            **NO_GPU,
            "PREFECT_HOME": str(home / "prefect"),
            "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
            "PREFECT_API_URL": self.prefect_api,
            "EQDIFF_CACHE": str(home / "model-cache"),
        }


def start(args: list[str], cwd: Path, env: dict[str, str], log: Path) -> subprocess.Popen:
    cwd.mkdir(parents=True, exist_ok=True)
    with log.open("w") as out:
        return subprocess.Popen(
            args, cwd=cwd, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )  # fmt: skip


def wait_workers(scheduler: str, count: int) -> None:
    from distributed import Client

    with Client(scheduler, timeout=30) as client:
        client.wait_for_workers(count, timeout=WORKER_START_S)


def start_worker(cluster: Cluster, name: str) -> subprocess.Popen:
    """``dask worker`` as on another box: its own empty working directory, cache and Prefect home. Killing its
    process group (the nanny and its worker) is losing that box."""
    machine = cluster.root / "machines" / name
    (machine / "work").mkdir(parents=True)
    env = {k: v for k, v in cluster.env(machine).items() if k != "PYTHONPATH"}  # the installed package
    args = [str(BIN / "dask"), "worker", cluster.scheduler, "--nthreads", "1", "--name", name]
    return start(args, machine / "work", env, machine / "worker.log")


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory):
    root = tmp_path_factory.mktemp("cluster")
    prefect_port, mlflow_port, dask_port = free_port(), free_port(), free_port()
    project = make_project_copy(
        root / "checkout",
        {
            **SETTINGS,
            "subjects": [{"name": name, "dir": f"data/subjects/{name}", "class": "toy"} for name in SUBJECTS],
            "classes": {"toy": "toy"},
            "variants": list(VARIANTS),
        },
    )
    for seed, name in enumerate(SUBJECTS):
        make_sample_subject(project / "data" / "subjects" / name, 2, seed=seed)
    cluster = Cluster(
        root, f"http://127.0.0.1:{prefect_port}/api", f"http://127.0.0.1:{mlflow_port}",
        f"tcp://127.0.0.1:{dask_port}", {}, project,
    )  # fmt: skip
    services = root / "services"
    started = []
    try:
        prefect_env = {
            **cluster.env(services),
            "PREFECT_SERVER_DATABASE_CONNECTION_URL": f"sqlite+aiosqlite:///{services / 'prefect.db'}",
        }
        prefect = [str(BIN / "prefect"), "server", "start", "--host", "127.0.0.1", "--port", str(prefect_port)]
        started.append(start(prefect, services / "prefect-cwd", prefect_env, root / "prefect-server.log"))
        mlflow = [str(BIN / "mlflow"), "server", "--host", "127.0.0.1", "--port", str(mlflow_port)]
        mlflow += ["--backend-store-uri", f"sqlite:///{services / 'mlflow.db'}"]
        mlflow += ["--artifacts-destination", str(services / "mlflow-artifacts"), "--workers", "1"]
        started.append(start(mlflow, services / "mlflow-cwd", cluster.env(services), root / "mlflow-server.log"))
        dask = [str(BIN / "dask"), "scheduler", "--host", "127.0.0.1", "--port", str(dask_port)]
        started.append(start(dask + ["--dashboard-address", ":0"], services / "dask-cwd", cluster.env(services),
                             root / "dask-scheduler.log"))  # fmt: skip
        for name in ("worker-1", "worker-2"):
            cluster.workers[name] = start_worker(cluster, name)
        started += cluster.workers.values()
        wait_healthy(f"{cluster.prefect_api}/health", started[0], root / "prefect-server.log", SERVER_START_S)
        wait_healthy(f"{cluster.mlflow_uri}/health", started[1], root / "mlflow-server.log", SERVER_START_S)
        wait_workers(cluster.scheduler, 2)
        yield cluster
    finally:
        for process in reversed(started):
            stop(process)


def benchmark(cluster: Cluster, store: Path) -> subprocess.Popen:
    """``python -m flows.benchmark`` on the cluster, from the checkout, writing into ``store``."""
    args = [str(BIN / "python"), "-m", "flows.benchmark", "--params", "params.yaml"]
    for override in (
        f"orchestration.dask_address={cluster.scheduler}",
        f"orchestration.store={store}",
        f"orchestration.tracking_uri={cluster.mlflow_uri}",
    ):
        args += ["-S", override]
    submit = cluster.root / "machines" / "submit"
    return start(args, cluster.project, cluster.env(submit), cluster.root / f"benchmark-{store.name}.log")


def finish(process: subprocess.Popen, log: Path) -> None:
    try:
        process.wait(timeout=BENCHMARK_S)
    except subprocess.TimeoutExpired:
        stop(process)
        raise AssertionError(f"benchmark still running after {BENCHMARK_S} s:\n{log.read_text()[-4000:]}") from None
    assert process.returncode == 0, log.read_text()[-4000:]


@pytest.fixture(scope="module")
def reference(cluster: Cluster) -> Path:
    """The store of an uninterrupted benchmark run."""
    store = cluster.root / "store-a"
    finish(benchmark(cluster, store), cluster.root / "benchmark-store-a.log")
    return store


def store_files(store: Path) -> dict[str, bytes]:
    """Every output under ``runs/`` and ``reports/`` (not the resumable stages' scratch, locks or temporaries),
    with the store's own path written as ``<store>`` and the wall time of each training step left out."""
    ignore = re.compile(r"(^|/)\.|concept-work/|prior-work/")
    files = {}
    for top in ("runs", "reports"):
        for path in sorted((store / top).rglob("*")):
            name = str(path.relative_to(store))
            if path.is_file() and not ignore.search(name):
                files[name] = path.read_bytes().replace(str(store).encode(), b"<store>")
                if path.name == "losses.jsonl":
                    records = [json.loads(line) for line in files[name].splitlines()]
                    files[name] = json.dumps([{k: v for k, v in r.items() if k != "time"} for r in records]).encode()
    return files


def test_benchmark_on_separate_workers_writes_every_artefact_through_the_store(cluster: Cluster, reference: Path):
    layout = RunLayout.under(reference)
    assert (layout.prior("toy") / "prior.json").is_file()
    for subject in SUBJECTS:
        for stage_file in ("masks/overlay.png", "bands/sheet.png", "augment/sheet.png"):
            assert (layout.subject(subject) / stage_file).is_file(), (subject, stage_file)
        for variant in VARIANTS:
            for path in ("concept/concept.safetensors", "concept/concept.json", "samples/grid.png"):
                assert (layout.run(subject, variant) / path).is_file(), (subject, variant, path)
            assert len(layout.losses(subject, variant).read_text().splitlines()) == SETTINGS["train"]["steps"]
            assert {"unstylized", "stylized"} <= set(json.loads(layout.metrics(subject, variant).read_text()))
            evaluation = json.loads(layout.evaluation(subject, variant).read_text())
            # evaluate read the photos copied into the store, not the checkout's relative data/subjects/...
            assert evaluation["subject_dir"] == str(reference / "inputs" / "subjects" / subject / subject)
    summary = json.loads((reference / "reports" / "summary.json").read_text())
    assert summary and (reference / "reports" / "index.html").is_file()
    # Nothing was written relative to the submitting process's directory or in the workers' directories.
    assert not {"runs", "reports", "mlflow.db", "mlartifacts", "mlruns"} & {p.name for p in cluster.project.iterdir()}
    for name in cluster.workers:
        assert list((cluster.root / "machines" / name / "work").iterdir()) == []

    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=cluster.mlflow_uri)
    experiment = client.get_experiment_by_name("eqdiff")
    assert experiment.artifact_location.startswith("mlflow-artifacts:")  # served by the tracking server
    runs = client.search_runs([experiment.experiment_id])
    parents = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    assert len(parents) == 1 and parents[0].info.status == "FINISHED"
    parent = parents[0]
    assert parent.data.params["pipeline.subjects"] == ",".join(SUBJECTS)
    assert {f"{v}/unstylized/clip_t" for v in VARIANTS} <= set(parent.data.metrics)
    assert "report" in {a.path for a in client.list_artifacts(parent.info.run_id)}
    nested = {(r.data.tags["eqdiff.subject"], r.data.tags["eqdiff.variant"]): r for r in runs if r is not parent}
    assert set(nested) == {(s, v) for s in SUBJECTS for v in VARIANTS}
    for (_, variant), run in nested.items():
        assert run.info.status == "FINISHED" and run.data.tags["mlflow.parentRunId"] == parent.info.run_id
        assert run.data.params["train.variant"] == variant
        steps = sorted(m.step for m in client.get_metric_history(run.info.run_id, "loss/total"))
        assert steps == list(range(1, SETTINGS["train"]["steps"] + 1))
        assert {"masks", "bands", "augment", "samples", "concept", "metrics"} <= {
            a.path for a in client.list_artifacts(run.info.run_id)
        }
    # An artifact read back through the server equals the store's file; it lives in the server's root.
    run = nested["toy_a", "F"]
    downloaded = client.download_artifacts(run.info.run_id, "concept/concept.safetensors", str(cluster.root / "dl"))
    concept = layout.concept("toy_a", "F") / "concept.safetensors"
    assert Path(downloaded).read_bytes() == concept.read_bytes()
    served = cluster.root / "services" / "mlflow-artifacts"
    assert [p for p in served.rglob("concept.safetensors") if run.info.run_id in str(p)]

    task_names, _ = prefect_task_runs_and_logs(cluster)
    assert {f"train-{s}-{v}" for s in SUBJECTS for v in VARIANTS} <= set(task_names)


def prefect_task_runs_and_logs(cluster: Cluster) -> tuple[list[str], list[str]]:
    """Every task run name and log line that the Prefect server holds (the workers reported them)."""
    from prefect.client.orchestration import get_client
    from prefect.settings import PREFECT_API_URL, temporary_settings

    messages: list[str] = []
    with temporary_settings({PREFECT_API_URL: cluster.prefect_api}), get_client(sync_client=True) as client:
        names = [run.name for run in client.read_task_runs()]
        # page by page (the server's default page is 200); its text search needs PostgreSQL
        while page := client.read_logs(limit=200, offset=len(messages)):
            messages += [log.message for log in page]
    return names, messages


def group_pids(pgid: int) -> list[int]:
    """The processes of process group ``pgid`` (a ``dask worker``: its nanny and the worker it started)."""
    pids = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rpartition(")")[2].split()
        except OSError:  # exited meanwhile
            continue
        if int(fields[2]) == pgid:
            pids.append(int(stat.parent.name))
    return pids


def holder(cluster: Cluster, lock: Path) -> str | None:
    """The worker (machine) one of whose processes holds ``lock`` open (the stage's output lock), if any."""
    for name, process in cluster.workers.items():
        for pid in group_pids(process.pid):
            try:
                if any(os.readlink(fd) == str(lock) for fd in Path(f"/proc/{pid}/fd").iterdir()):
                    return name
            except OSError:
                continue
    return None


def kill_a_training_worker(cluster: Cluster, store: Path, process: subprocess.Popen) -> tuple[str, Path]:
    """Wait for a ``train`` with a checkpoint and no concept yet; SIGKILL its worker's process group."""
    deadline = time.monotonic() + BENCHMARK_S
    layout = RunLayout.under(store)
    while time.monotonic() < deadline and process.poll() is None:
        for subject in SUBJECTS:
            for variant in VARIANTS:
                work, concept = layout.concept_work(subject, variant), layout.concept(subject, variant)
                if concept.exists() or not list(work.rglob("checkpoint-*/state.json")):
                    continue
                name = holder(cluster, work.parent / f".{work.name}.lock")
                if name and not concept.exists():
                    os.killpg(cluster.workers[name].pid, signal.SIGKILL)
                    cluster.workers[name].wait(timeout=20)
                    return name, work
        time.sleep(0.1)
    raise AssertionError("no train with a checkpoint was caught running")


def test_a_worker_lost_during_train_is_rescheduled_and_the_stage_resumes(cluster: Cluster, reference: Path):
    store = cluster.root / "store-b"
    process = benchmark(cluster, store)
    killed, work = kill_a_training_worker(cluster, store, process)
    finish(process, cluster.root / "benchmark-store-b.log")

    _, messages = prefect_task_runs_and_logs(cluster)
    resumed = [m for m in messages if m.startswith(f"resumed from {work}")]
    assert resumed, f"no 'resumed from {work}/...' line in the Prefect logs (worker {killed} killed)"
    step = int(re.search(r"\(step (\d+) of", resumed[0]).group(1))
    assert 0 < step < SETTINGS["train"]["steps"]
    # The outputs are those of the uninterrupted run, byte for byte (paths inside them aside).
    expected, got = store_files(reference), store_files(store)
    assert sorted(got) == sorted(expected)
    different = [name for name in expected if got[name] != expected[name]]
    assert not different, different
