"""DVC's queue workers, as a sweep meets them (docs/architecture.md, Sweeps): they can all exit with experiments
still queued (treeverse/dvc#10562), and the sweep's wait for the queue starts them again; one killed
mid-experiment leaves the experiment ``Running`` for ever, and the next sweep marks it failed and goes on."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest
from support.pipeline_copy import BIN, dvc, project_env

from tasks.experiments import EXECUTOR_RECORDS, wait_for_queue


def tiny_repo(repo: Path, cmd: str) -> Path:
    """A git + DVC repository with one stage running ``cmd`` (which may read the param ``x``)."""
    repo.mkdir()
    (repo / "params.yaml").write_text("x: 0\n")
    (repo / "dvc.yaml").write_text(f"stages:\n  echo:\n    cmd: {cmd}\n    params: [x]\n    outs: [out.txt]\n")
    git = ["git", "-c", "user.name=test", "-c", "user.email=test@example.com"]
    for command in (
        ["git", "init", "-q"],
        [str(BIN / "dvc"), "init", "-q"],
        [*git, "add", "-A"],
        [*git, "commit", "-qm", "x"],
    ):
        subprocess.run(command, cwd=repo, env=project_env(repo), check=True, capture_output=True)
    return repo


def start_workers(repo: Path) -> None:
    """``dvc queue start`` without waiting: its daemon keeps the caller's stdout open until the worker exits."""
    subprocess.run(
        [str(BIN / "dvc"), "queue", "start"],
        cwd=repo,
        env=project_env(repo),
        check=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


@pytest.mark.slow
def test_experiments_left_queued_with_no_worker_get_workers_again(tmp_path: Path):
    """DVC's queue workers can all exit with experiments still queued; the sweep starts them again."""
    repo = tiny_repo(tmp_path / "repo", "echo ${x} > out.txt")
    for name, x in (("a", 1), ("b", 2)):
        dvc(repo, "exp", "run", "--queue", "-n", name, "-S", f"x={x}")

    # No `dvc queue start`: the state DVC's workers leave when they exit early (Queued, 0 active, 0 idle).
    warnings: list[str] = []
    statuses = wait_for_queue(["a", "b"], repo, jobs=1, poll_seconds=1, warn=warnings.append)

    assert statuses == {"a": "Success", "b": "Success"}
    # One restart is enough here; a second is allowed (the worker count can read 0 while a worker starts).
    assert warnings[0] == "dvc queue: no worker left with 2 experiment(s) queued; starting 1 again"
    assert all(warning.startswith("dvc queue: no worker left with") for warning in warnings)
    shown = dvc(repo, "exp", "show", "--json").stdout
    assert '"a"' in shown and '"b"' in shown


@pytest.mark.slow
def test_a_sweep_after_a_killed_queue_worker_marks_its_experiment_failed_and_completes(tmp_path: Path):
    """A queue worker killed mid-experiment leaves it ``Running`` for ever; the next sweep fails it and goes on."""
    repo = tiny_repo(tmp_path / "repo", "sleep ${x}; echo ${x} > out.txt")
    dvc(repo, "exp", "run", "--queue", "-n", "killed", "-S", "x=120")
    start_workers(repo)
    # 1. Wait for DVC's record of the experiment's process, then SIGKILL the worker's whole process group (the
    # daemon `dvc queue start` left, the worker, the experiment's `dvc exp exec-run` and its stage's `sleep`).
    deadline = time.monotonic() + 120
    while not (records := list((repo / EXECUTOR_RECORDS).glob("*/*.json"))):
        assert time.monotonic() < deadline, "the queue worker never started the experiment"
        time.sleep(0.2)
    executor_pid = json.loads(records[0].read_text())["pid"]
    worker = json.loads((repo / ".dvc/tmp/exps/celery/dvc-exp-worker-1.json").read_text())
    group = os.getpgid(worker["pid"])
    assert group != os.getpgrp() and os.getpgid(executor_pid) == group
    os.killpg(group, signal.SIGKILL)

    # 2. A second sweep: queue its point, start the workers, wait.
    dvc(repo, "exp", "run", "--queue", "-n", "next", "-S", "x=0")
    start_workers(repo)
    warnings: list[str] = []
    assert wait_for_queue(["next"], repo, poll_seconds=1, warn=warnings.append) == {"next": "Success"}

    task = records[0].stem[:7]
    assert warnings == [
        f"dvc queue: experiment killed ({task}) was left running by a queue worker that died "
        f"(its process {executor_pid} is gone); marked it failed with `dvc queue kill`"
    ]
    # A wait for the killed experiment (its own sweep's, had that survived) ends too, instead of polling for ever.
    assert wait_for_queue(["killed", "next"], repo, warn=warnings.append) == {"killed": "Failed", "next": "Success"}
    assert len(warnings) == 1
