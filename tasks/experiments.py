"""Prefect tasks around DVC experiments for sweeps: check a grid's points, queue them, run the queue, collect.

DVC stays the source of truth of the DAG and its skip logic; these tasks only drive its CLI. Every point is a
queued experiment (``dvc exp run --queue -n NAME -S k=v ...``), run by ``dvc queue start -j N`` in its own
temporary workspace: the user's workspace, ``params.yaml`` included, is never touched, a failing point does
not stop the others, and ``dvc exp show`` lists them all. Prior and train outputs an experiment shares with
an earlier run come from DVC's run-cache (see dvc.yaml), so a sweep of ``generate`` settings never re-trains.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from prefect import get_run_logger, task
from prefect.cache_policies import NONE

from eqdiff.config import (
    AugmentConfig,
    ConfigError,
    EvaluateConfig,
    MasksConfig,
    MethodConfig,
    OrchestrationConfig,
    PriorConfig,
    apply_cli_overrides,
    load_params,
)
from eqdiff.errors import EqDiffError
from tasks.spec import read_prompt_sets, read_subjects, read_variants

FINISHED = ("Success", "Failed")
# Polls in a row with experiments queued and no worker alive before the workers are started again.
STALLED_POLLS = 6
# The one-line errors of our stage commands (`eqdiff <stage>: error: ...`, `track: error: ...`).
_STAGE_ERROR = re.compile(r"^(eqdiff \w+|track): error: .+")


class ExperimentError(EqDiffError, RuntimeError):
    """A ``dvc exp``/``dvc queue`` command failed; the message holds its last error line."""


def dvc_command(*args: str) -> list[str]:
    """``dvc`` of this interpreter's environment (the stages' ``eqdiff`` must come from there too)."""
    local = Path(sys.executable).with_name("dvc")
    return [str(local) if local.is_file() else "dvc", *args]


def _environment() -> dict[str, str]:
    bin_dir = str(Path(sys.executable).parent)
    return {**os.environ, "PATH": f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}"}


def _run(args: list[str], repo: Path) -> str:
    """Run a dvc command in ``repo``; its stdout, or ``ExperimentError`` with its last error line.

    Output goes to temporary files, not pipes: ``dvc queue start`` leaves a forked helper per worker that holds
    the command's stdout and stderr until its worker exits, so reading pipes to their end would wait for the
    whole queue (and ``wait_for_queue`` would see nothing of it, stale workers included).
    """
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        returncode = subprocess.run(args, cwd=repo, env=_environment(), stdout=out, stderr=err).returncode
        out.seek(0)
        err.seek(0)
        stdout, stderr = out.read(), err.read()
    if returncode != 0:
        lines = [line for line in (stderr + stdout).splitlines() if line.strip()]
        errors = [line for line in lines if "ERROR" in line or "error:" in line]
        raise ExperimentError(f"{' '.join(args[:3])} {' '.join(args[3:])}: {(errors or lines or ['failed'])[-1]}")
    return stdout


def override_text(key: str, value: Any) -> str:
    """``key=value`` with the value in YAML/JSON syntax, as ``dvc exp run -S`` reads it."""
    return f"{key}={value if isinstance(value, str) else json.dumps(value)}"


def check_params(params: dict[str, Any]) -> None:
    """Every check a stage would make of ``params`` before doing any work; ``ConfigError`` on the first."""
    read_subjects(params)
    read_prompt_sets(params)
    for variant in read_variants(params):
        MethodConfig.from_dict({**params, "train": {**(params.get("train") or {}), "variant": variant}}).resolved()
    for section in (MasksConfig, AugmentConfig, PriorConfig, EvaluateConfig, OrchestrationConfig):
        section.from_mapping(params.get(section.SECTION))


def check_point(base: dict[str, Any], overrides: dict[str, Any]) -> None:
    """``base`` params with one grid point's overrides applied pass ``check_params``."""
    for key in overrides:
        section = key.partition(".")[0]
        if section not in base:
            raise ConfigError(f"{key}: params.yaml has no section {section!r}")
    check_params(apply_cli_overrides(base, [override_text(k, v) for k, v in overrides.items()]))


def check_points(points: list[dict[str, Any]], params_file: Path) -> None:
    """Refuse a sweep, before anything runs, at its first invalid point (named by index and overrides)."""
    base = load_params(params_file)
    for index, point in enumerate(points):
        try:
            check_point(base, point)
        except ConfigError as exc:
            where = ", ".join(override_text(k, v) for k, v in point.items())
            raise ConfigError(f"point {index} of {len(points)} ({where}): {exc}") from None


@task(name="check-sweep", cache_policy=NONE, persist_result=False)
def check_points_task(points: list[dict[str, Any]], params_file: Path) -> None:
    """``check_points`` as the sweep flow's first task."""
    check_points(points, params_file)


@task(name="dvc-exp-queue", task_run_name="queue-{name}", cache_policy=NONE, persist_result=False)
def exp_queue_task(overrides: dict[str, Any], name: str, repo: Path) -> str:
    """``dvc exp run --queue -n NAME -S k=v ...`` in ``repo`` (the workspace is restored as it was)."""
    args = ["exp", "run", "--queue", "-n", name]
    for key, value in overrides.items():
        args += ["-S", override_text(key, value)]
    return _run(dvc_command(*args), repo)


# `dvc queue status`'s last line, e.g. "Worker status: 1 active, 0 idle".
_WORKERS = re.compile(r"^Worker status: (\d+) active, (\d+) idle")


def queue_state(repo: Path) -> tuple[dict[str, str], int, dict[str, str]]:
    """``dvc queue status``: experiment name -> ``Queued | Running | Success | Failed``, live workers, and the
    ``Running`` rows as task id (the stash rev's first 7 digits) -> name (the task id when unnamed)."""
    statuses, workers, running = {}, 0, {}
    for line in _run(dvc_command("queue", "status"), repo).splitlines()[1:]:
        fields = line.split()
        if match := _WORKERS.match(line):
            workers = int(match[1]) + int(match[2])
        elif len(fields) >= 4 and fields[-1] in ("Queued", "Running", *FINISHED):
            statuses[fields[1]] = fields[-1]
        if len(fields) >= 3 and fields[-1] == "Running":
            running[fields[0]] = fields[1] if len(fields) >= 4 else fields[0]
    return statuses, workers, running


# Where DVC 3.x's queue (dvc-task's ProcessManager) records each experiment's executor process (`dvc exp
# exec-run`): `.dvc/tmp/exps/run/<stash rev>/<stash rev>.json`, {"pid": ..., "returncode": null, ...}. The queue
# worker writes the return code when that process ends; a worker killed meanwhile never does.
EXECUTOR_RECORDS = Path(".dvc", "tmp", "exps", "run")


def _process_record(path: Path) -> dict[str, Any] | None:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:  # removed since listed (`dvc queue remove`, the experiment's clean-up)
        return None


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # it exists, as another user's process
        return True
    return True


def stale_experiments(repo: Path, running: dict[str, str]) -> dict[str, int]:
    """The experiments of ``running`` (``queue_state``'s third item) whose executor process is gone: stash rev ->
    the pid DVC recorded. One still being set up (no record yet) or whose process ended normally (its return code
    recorded) is never stale; the record is read again after the pid check, so a process that ends meanwhile is
    not taken for a killed one."""
    stale = {}
    for path in sorted((repo / EXECUTOR_RECORDS).glob("*/*.json")):
        rev = path.stem
        if path.parent.name != rev or rev[:7] not in running:
            continue
        record = _process_record(path)
        if record is None or record.get("returncode") is not None or _alive(record["pid"]):
            continue
        if (again := _process_record(path)) is not None and again.get("returncode") is None:
            stale[rev] = record["pid"]
    return stale


def fail_stale_experiments(repo: Path, running: dict[str, str], warn: Callable[[str], object] = print) -> None:
    """Mark failed, with one warning each, the experiments DVC shows as ``Running`` whose process is gone.

    A queue worker killed mid-experiment (SIGKILL, the OOM killer, a closed session) never records the end of
    its experiment, which DVC then shows as ``Running`` for ever (docs/architecture.md, "Sweeps").
    ``dvc queue kill REV`` is DVC's own way out: it finds the process gone and marks the task failed.
    """
    for rev, pid in stale_experiments(repo, running).items():
        _run(dvc_command("queue", "kill", rev), repo)
        warn(
            f"dvc queue: experiment {running[rev[:7]]} ({rev[:7]}) was left running by a queue worker that died "
            f"(its process {pid} is gone); marked it failed with `dvc queue kill`"
        )


def wait_for_queue(
    names: list[str],
    repo: Path,
    jobs: int = 1,
    poll_seconds: float = 5.0,
    warn: Callable[[str], object] = print,
) -> dict[str, str]:
    """Poll ``dvc queue status`` until every experiment of ``names`` has finished; their status.

    DVC's temporary queue workers can all exit while experiments are still queued (``Worker status: 0
    active, 0 idle`` beside ``Queued`` rows; docs/architecture.md, "Sweeps"), and would wait forever: after
    ``STALLED_POLLS`` polls like that, the workers are started again (``dvc queue start -j JOBS``), as DVC's
    own advice goes, with a warning. Restarting twice in a row with nothing finishing in between raises
    ``ExperimentError`` naming the experiments still queued. DVC's worker count can read 0 while a worker
    runs (it is a broadcast with a short timeout), so only a run of polls counts. A ``Running`` row is judged
    only by DVC's record of its process: one whose process is gone, its worker killed, is marked failed
    (``fail_stale_experiments``, one warning), whether it is one of ``names`` or an earlier sweep's.
    """
    stalled, restarts, finished = 0, 0, 0
    while True:
        statuses, workers, running = queue_state(repo)
        fail_stale_experiments(repo, running, warn)  # seen as Failed from the next poll on
        if missing := [name for name in names if name not in statuses]:
            raise ExperimentError(f"dvc queue status: {', '.join(missing)} no longer in the queue (removed?)")
        done = [name for name in names if statuses[name] in FINISHED]
        if len(done) == len(names):
            return {name: statuses[name] for name in names}
        if len(done) > finished:
            finished, restarts = len(done), 0
        waiting = [name for name in names if statuses[name] == "Queued"]
        stalled = stalled + 1 if waiting and not workers else 0
        if stalled >= STALLED_POLLS:
            if restarts == 2:
                raise ExperimentError(
                    f"dvc queue: {', '.join(waiting)} still queued, and the workers started twice for them "
                    "exited without running them; see `dvc queue status` and `dvc queue logs NAME`"
                )
            warn(f"dvc queue: no worker left with {len(waiting)} experiment(s) queued; starting {jobs} again")
            _run(dvc_command("queue", "start", "-j", str(jobs)), repo)
            stalled, restarts = 0, restarts + 1
        time.sleep(poll_seconds)


@task(name="dvc-queue-run", cache_policy=NONE, persist_result=False)
def queue_run_task(names: list[str], repo: Path, jobs: int = 1, poll_seconds: float = 5.0) -> dict[str, str]:
    """``dvc queue start -j JOBS``, then ``wait_for_queue``: the status of every experiment of ``names``."""
    _run(dvc_command("queue", "start", "-j", str(jobs)), repo)
    return wait_for_queue(names, repo, jobs, poll_seconds, warn=get_run_logger().warning)


def failure_line(name: str, repo: Path) -> str:
    """Why queued experiment ``name`` failed: its stage's one-line error, else DVC's last error line."""
    result = subprocess.run(
        dvc_command("queue", "logs", name), cwd=repo, env=_environment(), capture_output=True, text=True
    )
    lines = [line.strip() for line in (result.stdout + result.stderr).splitlines() if line.strip()]
    ours = [line for line in lines if _STAGE_ERROR.match(line)]
    theirs = [line for line in lines if line.startswith("ERROR")]
    return (ours or theirs or ["failed (see `dvc queue logs " + name + "`)"])[-1]


@task(name="dvc-exp-show", cache_policy=NONE, persist_result=False)
def exp_show_task(repo: Path) -> list[dict[str, Any]]:
    """``dvc exp show --json``, flattened to ``[{name, rev, params, metrics}]`` (one row per experiment)."""
    rows = []
    for commit in json.loads(_run(dvc_command("exp", "show", "--json"), repo)):
        for experiment in [commit] + [e for group in commit.get("experiments") or [] for e in group["revs"]]:
            data = experiment.get("data") or {}
            params = {path: block.get("data", {}) for path, block in (data.get("params") or {}).items()}
            metrics = {path: block.get("data", {}) for path, block in (data.get("metrics") or {}).items()}
            rows.append(
                {"name": experiment.get("name"), "rev": experiment.get("rev"), "params": params, "metrics": metrics}
            )
    return rows
