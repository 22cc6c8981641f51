"""Crash-safe artefacts (docs/robustness.md): atomic files and directories, output-directory locks, safetensors I/O.

Every artefact is written to a temporary sibling and renamed into place, so a reader never sees half a file; a
directory output is staged whole and swapped in. ``OutputLock`` makes a second run that targets the same output
directory refuse instead of interleaving writes. Only safetensors and JSON/PNG are written; nothing is pickled.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import logging
import os
import re
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from PIL import Image
from safetensors import SafetensorError

from eqdiff.errors import EqDiffError

if TYPE_CHECKING:  # torch is imported by the tensor functions: the stages that write none (sample, masks,
    import torch  # augment, report, track) start 3 s sooner without it

logger = logging.getLogger(__name__)


class ArtifactError(EqDiffError):
    """An artefact is corrupt, foreign, or its output directory is busy."""


class OutputBusyError(ArtifactError):
    """Another live process holds the output directory's lock: a user error at the CLI (one line, exit 2), and
    what a Prefect task may retry, since that process will finish (tasks/stages.py)."""


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _publish_mode(path: Path, directory: bool) -> None:
    """mkstemp/mkdtemp create 0600/0700 entries; published artefacts get the usual umask-based mode."""
    os.chmod(path, (0o777 if directory else 0o666) & ~_umask())


def _fsync_dir(directory: Path) -> None:
    with contextlib.suppress(OSError):
        fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; on success it is renamed onto ``path``, on error removed."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp" + path.suffix, dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        with open(tmp_path, "rb+") as fh:
            os.fsync(fh.fileno())
        _publish_mode(tmp_path, directory=False)
        os.replace(tmp_path, path)
        _fsync_dir(path.parent)
    except OSError as exc:
        if exc.filename is None:  # a failed write() names no file: name the artefact it was writing
            raise OSError(exc.errno, exc.strerror, str(path)) from None
        raise
    finally:
        tmp_path.unlink(missing_ok=True)


def write_bytes(path: str | Path, data: bytes) -> None:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def write_text(path: str | Path, text: str) -> None:
    write_bytes(path, text.encode("utf-8"))


def write_json(path: str | Path, obj: Any) -> None:
    write_text(path, json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n")


def save_png(path: str | Path, image: Image.Image) -> None:
    """Write a PNG atomically. PNG encoding is deterministic, so equal images give equal bytes."""
    with atomic_path(path) as tmp:
        image.save(tmp, format="PNG")


def save_tensors(path: str | Path, tensors: dict[str, torch.Tensor], metadata: dict[str, str] | None = None) -> None:
    """Write a safetensors file atomically (contiguous CPU copies)."""
    from safetensors.torch import save_file

    tensors = {k: v.detach().to("cpu").contiguous() for k, v in tensors.items()}
    with atomic_path(path) as tmp:
        try:
            save_file(tensors, str(tmp), metadata=metadata)
        except SafetensorError as exc:  # an I/O error inside the Rust writer (a full disk): an OSError
            code = re.search(r"os error (\d+)", str(exc))
            if code is None:
                raise
            raise OSError(int(code.group(1)), os.strerror(int(code.group(1))), str(path)) from None


def load_tensors(path: str | Path, device: str | torch.device = "cpu") -> dict[str, torch.Tensor]:
    """Read a safetensors file; a truncated or foreign file is a one-line ``ArtifactError``."""
    from safetensors.torch import load_file

    path = Path(path)
    if not path.is_file():
        raise ArtifactError(f"{path}: file not found")
    try:
        return load_file(str(path), device=str(device))
    except (SafetensorError, OSError, ValueError) as exc:
        raise ArtifactError(f"{path}: not a valid safetensors file ({str(exc).splitlines()[0]})") from None


def read_json(path: str | Path) -> Any:
    path = Path(path)
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ArtifactError(f"{path}: file not found") from None
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise ArtifactError(f"{path}: not valid JSON") from None


@contextlib.contextmanager
def staged_directory(path: str | Path) -> Iterator[Path]:
    """Build a whole directory in a staging sibling, then swap it onto ``path`` (old contents replaced)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{path.name}.staging-", dir=path.parent))
    try:
        yield staging
        _publish_mode(staging, directory=True)
        if path.exists():
            trash = Path(tempfile.mkdtemp(prefix=f".{path.name}.old-", dir=path.parent))
            os.replace(path, trash / path.name)
            os.replace(staging, path)
            shutil.rmtree(trash, ignore_errors=True)
        else:
            os.replace(staging, path)
        _fsync_dir(path.parent)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


TEMPORARY_NAME = re.compile(r"^\..+\.(?:(?:staging|old)-[a-z0-9_]{8}|[a-z0-9_]{8}\.tmp(?:\.[^./]+)?)$")
"""Names of the temporaries ``atomic_path`` and ``staged_directory`` create (``.name.XXXXXXXX.tmp.png``,
``.name.staging-XXXXXXXX``): a run killed mid-write (SIGKILL, power loss) leaves them behind."""


def remove_temporaries(directory: str | Path) -> list[Path]:
    """Delete every temporary a killed writer left under ``directory`` (recursively); return what went.

    Call it only while holding the directory's ``OutputLock``: then no live writer owns them.
    """
    removed: list[Path] = []
    for root, dirnames, filenames in os.walk(directory):
        for name in [d for d in dirnames if TEMPORARY_NAME.match(d)]:
            dirnames.remove(name)  # do not descend into what is being deleted
            shutil.rmtree(Path(root) / name, ignore_errors=True)
            removed.append(Path(root) / name)
        for name in filter(TEMPORARY_NAME.match, filenames):
            (Path(root) / name).unlink(missing_ok=True)
            removed.append(Path(root) / name)
    return removed


class OutputLock:
    """An exclusive, non-blocking lock on an output directory: a second run writing there refuses.

    The lock is a ``flock`` on ``<dir>.lock`` beside the directory, so it is released by the kernel when the
    holder dies (a killed run never leaves a stale lock) and it never appears inside a DVC output.
    """

    def __init__(self, directory: str | Path):
        self.directory = Path(directory)
        self.lock_path = self.directory.parent / f".{self.directory.name}.lock"
        self._fd: int | None = None

    def __enter__(self) -> OutputLock:
        self.lock_path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.lock_path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            os.close(fd)
            if exc.errno in (errno.EAGAIN, errno.EACCES):
                raise OutputBusyError(
                    f"{self.directory}: another run is writing this output directory (lock {self.lock_path})"
                ) from None
            raise
        self._fd = fd
        # Now that no other run can be writing here, clear what a killed one left: temporaries inside the
        # directory and its own staging siblings (``.<name>.staging-*``) beside it.
        stale = remove_temporaries(self.directory) if self.directory.is_dir() else []
        for sibling in self.directory.parent.glob(f".{self.directory.name}.*"):
            if TEMPORARY_NAME.match(sibling.name) and sibling.is_dir():
                shutil.rmtree(sibling, ignore_errors=True)
                stale.append(sibling)
        if stale:
            logger.info("%s: removed %d temporaries of an interrupted run", self.directory, len(stale))
        return self

    def __exit__(self, *exc_info: object) -> None:
        if self._fd is not None:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None
