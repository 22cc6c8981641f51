"""A throw-away copy of the project (tracked files only) for running DVC and the flows as a user would."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent

# The smallest settings that still run every code path of every stage, on the tiny preset (the test fixture:
# random weights, fastest); the demo's own world preset runs in test_world.
TINY = {
    "model": {"preset": "tiny"},
    "train": {"steps": 2, "resolution": 32, "num_class_images": 2, "checkpointing_steps": 1},
    "prior": {"num_inference_steps": 2},
    "generate": {"num_inference_steps": 2},
    "augment": {"views_per_photo": 1},
}


def project_env(project: Path) -> dict[str, str]:
    """The demo's environment: this venv's ``eqdiff``/``dvc`` on PATH, the copy's code first on PYTHONPATH."""
    return {
        **os.environ,
        "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}",
        "PYTHONPATH": str(project),
        "HF_HUB_OFFLINE": "1",
        "OMP_NUM_THREADS": "1",
    }


def run(project: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    result = subprocess.run(list(args), cwd=project, env=project_env(project), capture_output=True, text=True)
    if check and result.returncode != 0:
        raise AssertionError(f"{' '.join(args)} failed ({result.returncode}):\n{result.stdout}\n{result.stderr}")
    return result


def dvc(project: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    return run(project, str(BIN / "dvc"), *args, check=check)


def make_project_copy(destination: Path, overrides: dict[str, Any] | None = None) -> Path:
    """Copy the tracked files into ``destination``, apply ``overrides`` to params.yaml, git init + commit.

    A mapping override updates its section; any other value (``subjects``, ``classes``) replaces the key."""
    files = subprocess.run(["git", "ls-files"], cwd=REPO, capture_output=True, text=True, check=True).stdout
    for name in files.splitlines():
        source = REPO / name
        if source.is_file() and not name.startswith("tests/"):
            target = destination / name
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target)
    params_file = destination / "params.yaml"
    params = yaml.safe_load(params_file.read_text())
    for section, values in (overrides or {}).items():
        if isinstance(values, dict) and isinstance(params.get(section), dict) and section != "classes":
            params[section].update(values)
        else:
            params[section] = values
    params_file.write_text(yaml.safe_dump(params, sort_keys=False))
    git = ["git", "-c", "user.name=test", "-c", "user.email=test@example.com"]
    for command in (["git", "init", "-q"], [*git, "add", "-A"], [*git, "commit", "-qm", "copy"]):
        subprocess.run(command, cwd=destination, check=True, capture_output=True)
    return destination


def ran_stages(output: str) -> list[str]:
    """Stage names from ``Running stage 'NAME':`` lines of ``dvc repro``/``dvc exp run`` output."""
    return [line.split("'")[1] for line in output.splitlines() if line.startswith("Running stage '")]
