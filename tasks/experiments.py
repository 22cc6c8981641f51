"""Prefect tasks around DVC experiments (``dvc exp run -S ...``, ``dvc exp show --json``) for sweeps.

DVC stays the source of truth of the DAG and its skip logic; these tasks only drive its CLI. Experiments run
one after another in the workspace (parallel ``dvc`` runs in one workspace fight over its lock; for parallel
sweeps queue them, ``dvc exp run --queue`` + ``dvc queue start -j N``, see the README).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from prefect import task
from prefect.cache_policies import NONE

from eqdiff.errors import EqDiffError


class ExperimentError(EqDiffError, RuntimeError):
    """A ``dvc exp`` command failed; the message holds its last error line."""


def dvc_command(*args: str) -> list[str]:
    """``dvc`` of this interpreter's environment (the stages' ``eqdiff`` must come from there too)."""
    local = Path(sys.executable).with_name("dvc")
    return [str(local) if local.is_file() else "dvc", *args]


def _environment() -> dict[str, str]:
    bin_dir = str(Path(sys.executable).parent)
    return {**os.environ, "PATH": f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}"}


def _run(args: list[str], repo: Path) -> str:
    result = subprocess.run(args, cwd=repo, env=_environment(), capture_output=True, text=True)
    if result.returncode != 0:
        lines = [line for line in (result.stderr + result.stdout).splitlines() if line.strip()]
        errors = [line for line in lines if "ERROR" in line or "error:" in line]
        raise ExperimentError(f"{' '.join(args[:3])} {' '.join(args[3:])}: {(errors or lines or ['failed'])[-1]}")
    return result.stdout


def override_text(key: str, value: Any) -> str:
    """``key=value`` with the value in YAML/JSON syntax, as ``dvc exp run -S`` reads it."""
    return f"{key}={value if isinstance(value, str) else json.dumps(value)}"


@task(name="dvc-exp-run", task_run_name="exp-{name}", cache_policy=NONE, persist_result=False)
def exp_run_task(overrides: dict[str, Any], name: str, repo: Path) -> str:
    """``dvc exp run -n NAME -S k=v ...`` in ``repo``; returns its output (which stages ran, which skipped)."""
    args = ["exp", "run", "-n", name]
    for key, value in overrides.items():
        args += ["-S", override_text(key, value)]
    return _run(dvc_command(*args), repo)


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
