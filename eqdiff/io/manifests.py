"""Skip logic of the cached stages (``augment``, ``bands``, ``prior``): input digests and manifest comparison.

A cached stage records, in a JSON manifest beside its outputs, a *key*: the SHA-256 of every input file,
the options that shape its outputs and (where a model is involved) the model fingerprint. A re-run whose key
equals the recorded one and whose outputs all exist rewrites nothing (docs/robustness.md: unchanged inputs, untouched
outputs), so DVC, Prefect caching and ``make``-style callers see stable files. The manifests' schemas are in
``eqdiff.io.schemas.stage_manifests``.
"""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path
from typing import Any

from eqdiff.errors import DataError
from eqdiff.io.artifacts import ArtifactError
from eqdiff.io.schemas.stage_manifests import StageManifest
from eqdiff.prep.subjects import Subject

logger = logging.getLogger(__name__)


def file_digest(path: Path) -> str:
    """SHA-256 hex digest of a file's bytes."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def subject_inputs(subject: Subject, masks_dir: Path) -> dict[str, dict[str, str]]:
    """``{stem: {photo, photo_sha256, mask_sha256}}`` per photo; a missing mask is a DataError naming it."""
    inputs = {}
    for photo in subject.photos:
        mask = subject.mask_path(masks_dir, photo)
        if not mask.is_file():
            raise DataError(f"{mask}: mask not found for photo {photo.name} (run `eqdiff masks` first)")
        inputs[photo.stem] = {
            "photo": photo.name,
            "photo_sha256": file_digest(photo),
            "mask_sha256": file_digest(mask),
        }
    return inputs


def normalised(key: dict[str, Any]) -> dict[str, Any]:
    """The key as it reads back from JSON (tuples become lists, enums their values)."""
    return json.loads(json.dumps(key, sort_keys=True, default=str))


def is_up_to_date(manifest: Path, key: dict[str, Any], outputs: list[Path], schema: type[StageManifest]) -> bool:
    """True when ``manifest`` (a ``schema``) records exactly ``key`` and every output file exists.

    An unreadable manifest counts as stale (the stage recomputes and replaces it), never as an error: it is
    the stage's own output, not user input.
    """
    if not manifest.is_file() or not all(p.is_file() for p in outputs):
        return False
    try:
        recorded = schema.read(manifest)
    except ArtifactError as exc:
        logger.warning("%s; recomputing", exc)
        return False
    return recorded.key == normalised(key)


def check_cache_inputs(cache_dir: Path, schema: type[StageManifest], subject: Subject, masks_dir: Path) -> None:
    """Refuse a cache (``eqdiff bands``/``augment`` output: ``schema`` is its manifest) not made from these photos
    and masks, by content.

    The manifest's ``key.inputs`` records each photo's and mask's SHA-256; a photo edited in place after the
    cache was made keeps its name but not its digest, so comparing names alone would train on stale data.
    """
    path, stage = Path(cache_dir) / schema.FILE, schema.STAGE
    if not path.is_file():
        raise DataError(f"{path}: file not found (run `eqdiff {stage}` first)")
    try:
        inputs = schema.read(path).key.get("inputs")
    except ArtifactError as exc:
        raise DataError(f"{exc} (re-run `eqdiff {stage}`)") from None
    if not isinstance(inputs, dict):
        raise DataError(f"{path}: not an `eqdiff {stage}` manifest (no key.inputs); re-run `eqdiff {stage}`")
    current = subject_inputs(subject, masks_dir)
    for stem, entry in current.items():
        if inputs.get(stem) != entry:
            raise DataError(
                f"{path}: made from other contents of {subject.directory / entry['photo']} or its mask "
                f"(compared by SHA-256); re-run `eqdiff {stage}`"
            )
    if extra := sorted(set(inputs) - set(current)):
        raise DataError(
            f"{path}: made from a photo no longer in {subject.directory} ({extra[0]}); re-run `eqdiff {stage}`"
        )
