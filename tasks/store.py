"""The store: one directory that the flow's machine and every Dask worker see at the same path.

A Dask worker is another process, often on another machine, started in its own directory: a relative path
handed to it (``data/subjects/demo_ball``, ``runs/``) means nothing there. So a flow hands its tasks absolute
paths only, all inside the store:

- ``runs/`` and ``reports/`` (relative flow arguments) resolve against the store root (``RunLayout.under``);
- the inputs named in params — subject folders and prompt files, relative to the flow's working directory —
  are copied into ``<store>/inputs/`` before anything is submitted (``stage_inputs``), unless they already
  lie in the store, so a worker needs nothing of the submitting machine's checkout.

The store root is ``orchestration.store``: a shared filesystem (NFS, a cluster filesystem) mounted at that path
on every machine. Without it (null), the root is the flow's working directory and nothing is copied: enough
for one machine, or for workers that see that directory at the same path.
"""

from __future__ import annotations

import dataclasses
import filecmp
import shutil
from pathlib import Path

from eqdiff.config import OrchestrationConfig
from eqdiff.errors import DataError
from eqdiff.io.artifacts import staged_directory
from tasks.spec import SubjectSpec

INPUTS = "inputs"
"""``<store>/inputs/subjects/<name>/<folder>/`` and ``<store>/inputs/prompts/<set>/<file>``."""


def store_root(config: OrchestrationConfig) -> Path:
    """``orchestration.store`` (absolute), else the current directory made absolute."""
    return Path(config.store) if config.store else Path.cwd().absolute()


def _files(directory: Path) -> dict[str, Path]:
    """Relative name -> file of every regular file under ``directory`` (hidden temporaries excluded)."""
    return {
        str(path.relative_to(directory)): path
        for path in sorted(directory.rglob("*"))
        if path.is_file() and not any(part.startswith(".") for part in path.relative_to(directory).parts)
    }


def _same(files: dict[str, Path], target: Path) -> bool:
    return (
        target.is_dir()
        and _files(target).keys() == files.keys()
        and all(filecmp.cmp(source, target / name, shallow=False) for name, source in files.items())
    )


def sync_files(files: dict[str, Path], target: Path) -> Path:
    """Make ``target`` a folder holding exactly ``files`` (relative name -> source), byte for byte.

    An up-to-date copy is left untouched (its files keep their times); otherwise the whole folder is rebuilt
    beside it and swapped in, so a worker never reads a half-copied folder."""
    if not _same(files, target):
        with staged_directory(target) as staging:
            for name, source in files.items():
                (staging / name).parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(source, staging / name)
    return target


def _inside(path: Path, root: Path) -> bool:
    return path == root or root in path.parents


def stage_subject(subject: SubjectSpec, root: Path) -> SubjectSpec:
    """``subject`` with its photo folder copied to ``<root>/inputs/subjects/<name>/<folder name>/``.

    The folder keeps its name (stages name a subject by it). A folder already inside ``root`` is used as is."""
    source = subject.dir.absolute()
    if _inside(source, root):
        return dataclasses.replace(subject, dir=source)
    if not source.is_dir():
        raise DataError(f"{subject.dir}: subject folder not found")
    target = sync_files(_files(source), root / INPUTS / "subjects" / subject.name / source.name)
    return dataclasses.replace(subject, dir=target)


def stage_prompt_file(name: str, path: Path, root: Path) -> Path:
    """Prompt set ``name``'s file copied to ``<root>/inputs/prompts/<name>/<file name>`` (kept when inside)."""
    source = path.absolute()
    if _inside(source, root):
        return source
    if not source.is_file():  # a FIFO would block the copy
        raise DataError(f"{path}: {'not a regular file' if source.exists() else 'prompt file not found'}")
    return sync_files({source.name: source}, root / INPUTS / "prompts" / name) / source.name


def stage_inputs(
    subjects: list[SubjectSpec], prompt_sets: dict[str, Path], root: Path
) -> tuple[list[SubjectSpec], dict[str, Path]]:
    """The subjects and prompt sets with every input copied into the store at ``root`` (see the module)."""
    staged = [stage_subject(subject, root) for subject in subjects]
    return staged, {name: stage_prompt_file(name, path, root) for name, path in prompt_sets.items()}
