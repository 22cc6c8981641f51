"""Caches the project derives, that heal (docs/robustness.md, "Caches that heal"): the random presets' diffusers
directories (``tiny-v1-seed0``, ...) and the world preset's completed directory (``world-<digest>``, with the
CLIP tokenizer's files), under the model cache folder (``model.cache_dir``, ``$EQDIFF_CACHE`` or
``~/.cache/eqdiff``).

Each is built once in a temporary folder beside it, stamped with every file's size and sha256
(``eqdiff_cache.json``), and renamed into place, so a reader never sees half a cache. A reader checks it cheaply
(the stamp is there and every file has its recorded size): a truncated shard (a full disk, a killed copy) fails
that, and the cache is rebuilt once, atomically, with one WARNING line. A damage of the same size shows when the
file is loaded: ``eqdiff.models.components.load_components`` then rebuilds it once too. A cache that fails again
after its rebuild is a one-line ``ModelError`` naming the folder to delete.
"""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path

from eqdiff.errors import ModelError

logger = logging.getLogger(__name__)

STAMP = "eqdiff_cache.json"


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def inventory(directory: Path) -> dict[str, list]:
    """``{relative path: [size, sha256]}`` of every file under ``directory`` but the stamp."""
    return {
        path.relative_to(directory).as_posix(): [path.stat().st_size, _sha256(path)]
        for path in sorted(directory.rglob("*"))
        if path.is_file() and path.name != STAMP
    }


def damage(directory: Path) -> str | None:
    """What is wrong with the cache at ``directory`` by the cheap check (stamp, each file's size), or None."""
    stamp = directory / STAMP
    if not stamp.is_file():
        return f"no {STAMP} (built by an older version, or unfinished)"
    try:
        files = json.loads(stamp.read_text(encoding="utf-8"))["files"]
    except (OSError, ValueError, KeyError, TypeError):
        return f"{STAMP} is unreadable"
    for name, (size, _) in files.items():
        path = directory / name
        if not path.is_file():
            return f"{name} is missing"
        if path.stat().st_size != size:
            return f"{name} has {path.stat().st_size} bytes, expected {size}"
    return None


def build(directory: Path, make: Callable[[Path], None]) -> None:
    """Build the cache at ``directory`` with ``make(folder)`` in a temporary folder beside it, stamp it and swap
    it in whole (a damaged one is moved aside first, then removed)."""
    directory.parent.mkdir(parents=True, exist_ok=True)
    # named as the artefacts' temporaries (TEMPORARY_NAME): the next builder's lock removes a killed build's
    staging = Path(tempfile.mkdtemp(prefix=f".{directory.name}.staging-", dir=directory.parent))
    damaged = None
    try:
        make(staging)
        (staging / STAMP).write_text(json.dumps({"files": inventory(staging)}, indent=1) + "\n", encoding="utf-8")
        if directory.exists():
            damaged = Path(tempfile.mkdtemp(prefix=f".{directory.name}.old-", dir=directory.parent))
            directory.rename(damaged / directory.name)
        staging.rename(directory)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
        if damaged is not None:
            shutil.rmtree(damaged, ignore_errors=True)


def ensure(directory: Path, make: Callable[[Path], None], what: str, rebuild: bool = False) -> Path:
    """``directory``, built by ``make`` if it is missing or fails the cheap check (``damage``), or when ``rebuild``
    (a file of it failed to load: the caller has said so in its WARNING line); one WARNING line for a rebuild
    found here, a one-line ``ModelError`` naming the folder to delete when the rebuilt cache is still damaged."""
    problem = "one of its files failed to load" if rebuild else damage(directory) if directory.exists() else None
    if directory.exists() and problem is None:
        return directory
    from eqdiff.io.artifacts import OutputLock  # here: importing the presets imports no torch

    with OutputLock(directory):  # one builder at a time; the others find it intact once the lock is theirs
        problem = "one of its files failed to load" if rebuild else damage(directory) if directory.exists() else None
        if directory.exists() and problem is None:
            return directory
        if directory.exists() and not rebuild:
            logger.warning("%s cache %s: %s; rebuilding it", what, directory, problem)
        build(directory, make)
    if (again := damage(directory)) is not None:
        raise ModelError(f"{what} cache {directory}: still damaged after a rebuild ({again}); delete that folder")
    return directory
