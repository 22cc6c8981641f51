"""Output safety: a stage writes only inside its own output, and replaces an existing output only when it is
that stage's own earlier output.

``claim_output`` runs at every stage's door before anything is created (the output's lock, its staging
folder, its first file). It refuses, with one line naming the path:

* an output that **is**, **contains** or **lies inside** one of the stage's inputs. Inputs come in two kinds:
  ``reads`` (files, and folders read whole: a masks folder, a concept, a samples folder, a model directory)
  and ``folders`` (folders read at their top level only: a subject's photos, real class images). An output
  inside a ``folders`` input is allowed (``<subject>/masks`` is the usual layout): the stage never reads
  below the top level, and the output's own files are not photos of that folder;
* an output under a regular file (``--out photo.png/masks``);
* an existing output that is not the stage's own earlier output: a non-empty folder without the stage's
  manifest (``masks.json``, ``concept.json``, ...) or, for a file output, a file whose contents are not what
  the stage writes. The atomic swap of a folder output replaces everything there, so only a folder the stage
  wrote itself may be replaced.

``inside`` checks that a path built from a name (a prompt-set name, a file listed in a manifest) resolves
inside its folder.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from eqdiff.io.artifacts import TEMPORARY_NAME, ArtifactError

SAFE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$")
"""A name that becomes one path component (a prompt-set folder): letters, digits, ``_`` and ``-``, no dots."""


class OutputError(ArtifactError):
    """An output path would overwrite, delete or write outside what the stage owns."""


def check_name(name: Any, what: str) -> str:
    """``name`` when it is a safe single path component (``SAFE_NAME``), else an ``OutputError`` naming it."""
    if not isinstance(name, str) or not SAFE_NAME.match(name):
        raise OutputError(
            f"{what} {name!r}: expected a name of letters, digits, '_' or '-' (at most 64, no dots or slashes)"
        )
    return name


def inside(folder: Path, relative: Any, where: str) -> Path:
    """``folder / relative`` when ``relative`` is a relative path that resolves inside ``folder``.

    ``where`` names the manifest (and field) the name came from, for the one-line error.
    """
    if not isinstance(relative, str) or not relative or "\0" in relative:
        raise OutputError(f"{where}: expected a file name inside {folder}, got {relative!r}")
    candidate = Path(relative)
    target = (folder / candidate).resolve()
    if candidate.is_absolute() or ".." in candidate.parts or not target.is_relative_to(folder.resolve()):
        raise OutputError(f"{where}: {relative!r} is not a file inside {folder}")
    return folder / candidate


def check_parent(out: Path) -> None:
    """Refuse an output path under a regular file (``--out photo.png/masks``)."""
    for ancestor in out.absolute().parents:
        if ancestor.exists():
            if not ancestor.is_dir():
                raise OutputError(f"{out}: {ancestor} is a file, not a folder; choose an output under a folder")
            return


def _check_inputs(out: Path, reads: Iterable[Path | None], folders: Iterable[Path | None]) -> None:
    target = out.resolve()
    inputs = [
        (p, Path(p).expanduser().resolve(), whole)
        for p, whole in [*((p, True) for p in reads), *((p, False) for p in folders)]
        if p is not None
    ]
    # The most direct relation is named first: an output that is an input is reported as such, not as a
    # folder that contains that input's own files.
    for path, source, _ in inputs:
        if source == target:
            raise OutputError(f"{out}: is an input of this stage ({path}); choose another output")
    for path, source, _ in inputs:
        if source.is_relative_to(target):
            raise OutputError(f"{out}: contains an input of this stage ({path}); choose another output")
    for path, source, whole in inputs:
        if whole and target.is_relative_to(source):
            raise OutputError(f"{out}: lies inside an input of this stage ({path}); choose another output")


def _is_json_object(path: Path, valid: Callable[[dict[str, Any]], bool] | None) -> bool:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return isinstance(data, dict) and (valid is None or valid(data))


def _check_existing_folder(out: Path, stage: str, manifest: str | tuple[str, ...]) -> None:
    if not out.exists():
        return
    if not out.is_dir():
        raise OutputError(f"{out}: is a file, expected a folder for the output of `eqdiff {stage}`")
    entries = [p for p in out.iterdir() if not TEMPORARY_NAME.match(p.name)]  # a killed run's leftovers
    if not entries:
        return
    markers = (manifest,) if isinstance(manifest, str) else manifest
    # A JSON manifest must parse to an object; any other marker (``.run_key``, ``checkpoints/``) must exist.
    own = any(
        _is_json_object(out / name, None) if name.endswith(".json") else (out / name).exists() for name in markers
    )
    if not own:
        raise OutputError(
            f"{out}: not an earlier output of `eqdiff {stage}` (no {' or '.join(markers)}); "
            "choose a new or empty folder"
        )


def claim_output(
    out: str | Path,
    stage: str,
    *,
    manifest: str | tuple[str, ...] | None = None,
    reads: Iterable[Path | None] = (),
    folders: Iterable[Path | None] = (),
    file_check: Callable[[dict[str, Any]], bool] | None = None,
) -> Path:
    """Refuse ``out`` unless ``stage`` may write it (rules in the module docstring); returns ``out``.

    A folder output names its ``manifest`` (a file, or several names of which one must be there: a JSON
    manifest must parse to an object). A file output (``manifest`` None) may replace an existing file only
    when it is a JSON object accepted by ``file_check``.
    """
    out = Path(out)
    check_parent(out)
    _check_inputs(out, list(reads), list(folders))
    if manifest is not None:
        _check_existing_folder(out, stage, manifest)
    elif out.is_dir():
        raise OutputError(f"{out}: is a folder, expected a file path for the output of `eqdiff {stage}`")
    elif out.exists() and not _is_json_object(out, file_check):
        raise OutputError(f"{out}: not an earlier output of `eqdiff {stage}`; remove it or choose another path")
    return out


def optional_path(value: str | None) -> Path | None:
    return Path(value).expanduser() if value else None
