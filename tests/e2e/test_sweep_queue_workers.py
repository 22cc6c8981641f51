"""DVC's queue workers can all exit with experiments still queued (treeverse/dvc#10562): the sweep's wait for the
queue starts them again (docs/architecture.md, Sweeps)."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
from support.pipeline_copy import BIN, dvc, project_env

from tasks.experiments import wait_for_queue


@pytest.mark.slow
def test_experiments_left_queued_with_no_worker_get_workers_again(tmp_path: Path):
    """DVC's queue workers can all exit with experiments still queued; the sweep starts them again."""
    repo = tmp_path / "repo"
    repo.mkdir()
    (repo / "params.yaml").write_text("x: 0\n")
    (repo / "dvc.yaml").write_text(
        "stages:\n  echo:\n    cmd: echo ${x} > out.txt\n    params: [x]\n    outs: [out.txt]\n"
    )
    git = ["git", "-c", "user.name=test", "-c", "user.email=test@example.com"]
    for command in (
        ["git", "init", "-q"],
        [str(BIN / "dvc"), "init", "-q"],
        [*git, "add", "-A"],
        [*git, "commit", "-qm", "x"],
    ):
        subprocess.run(command, cwd=repo, env=project_env(repo), check=True, capture_output=True)
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
