"""Subject masks (docs/method.md, Masks and MGDP; docs/architecture.md, Offline models and data): the masks
MGDP composes with and L_ra / L_ca supervise.

Three backends, one output contract. ``u2netp`` (the offline default) runs U²-Netp (``eqdiff.prep.u2netp``), a
class-agnostic salient object segmenter shipped in a wheel, and by default refines its saliency across the
subject's photos (``eqdiff.prep.mask_refine``: flip and zoom test-time augmentation, edge-aware refinement at photo
resolution, foreign regions and components scored by their agreement with the subject, holes filled, missed
parts grown back, and a fallback to the plain mask for a photo whose refined mask loses part of the subject's
body); ``masks.refine: false`` keeps the plain thresholded saliency. ``grounded-sam``
(``eqdiff.prep.grounded_sam``) prompts GroundingDINO with the class noun, keeps the best box and asks SAM for that
box's mask; every model file comes from a local path in params. ``files`` reads the user's own masks. Every
backend's masks then go through the self-checks of ``eqdiff.prep.mask_checks``.

Output of ``compute_masks`` (a directory, written whole and atomically): ``<stem>.png`` per photo (mode L,
values 0/255, the photo's size and orientation), ``overlay.png`` (a contact sheet: each photo with its
background dimmed and its mask outlined, its foreground percentage, a red frame when a self-check found
something and a blue one when the refinement fell back to the plain mask) and ``masks.json``
(``eqdiff.io.schemas.stage_manifests.MasksManifest``; per photo: the foreground fraction, backend, threshold,
what refinement changed, whether it fell back, and the self-checks' findings; all the warnings; the key of the
inputs that produced it).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image
from tqdm.auto import tqdm

from eqdiff.config import MaskBackend, MasksConfig, section_to_dict
from eqdiff.errors import DataError
from eqdiff.io.artifacts import OutputLock, save_png, staged_directory, write_json
from eqdiff.io.manifests import file_digest, is_up_to_date, normalised
from eqdiff.io.schemas.stage_manifests import MaskRecord, MasksManifest
from eqdiff.io.sheets import grid, labelled, overlay, tile_sheet
from eqdiff.prep.mask_checks import check_masks
from eqdiff.prep.mask_refine import REVISION as REFINEMENT_REVISION
from eqdiff.prep.mask_refine import refine_subject
from eqdiff.prep.subjects import PhotoMask, Subject, image_files, load_image, load_mask
from eqdiff.prep.u2netp import saliency_views, u2netp_saliency

logger = logging.getLogger(__name__)

FILE_MASK_SUFFIXES = (".png", ".jpg", ".jpeg")
RESERVED_STEMS = ("overlay", "masks")
"""Photo stems that would collide with the sheet and the manifest in the output directory."""
TILE = 256
"""Side of one photo's tile in the overlay sheet."""


# --------------------------------------------------------------------------------------------- per backend


def _user_mask_file(files_dir: Path, photo: Path) -> Path:
    for suffix in FILE_MASK_SUFFIXES:
        candidate = files_dir / f"{photo.stem}{suffix}"
        if candidate.is_file():
            return candidate
    raise DataError(
        f"{files_dir / (photo.stem + '.png')}: no mask for photo {photo.name} "
        f"(expected {' or '.join(photo.stem + s for s in FILE_MASK_SUFFIXES)})"
    )


def files_dir(config: MasksConfig, subject: Subject) -> Path:
    """The ``files`` backend's folder; ``{subject_dir}`` in ``masks.files_dir`` is the subject's folder, so one
    setting serves every subject whose masks sit beside its photos (``{subject_dir}/masks``)."""
    return Path(config.files_dir.replace("{subject_dir}", str(subject.directory))).expanduser()


def _mask_fn(config: MasksConfig, subject: Subject) -> Callable[[Path, Image.Image], PhotoMask]:
    """The backend as one function: (photo path, RGB photo) -> PhotoMask."""
    if config.backend == MaskBackend.U2NETP:
        return lambda photo, image: PhotoMask(
            u2netp_saliency(image) >= config.threshold, config.threshold, {"refined": False}
        )
    if config.backend == MaskBackend.FILES:
        folder = files_dir(config, subject)
        if not folder.is_dir():
            raise DataError(f"{folder}: masks.files_dir not found")
        # load_mask binarises at 0.5 and refuses a wrong size or an empty mask, naming the file.
        return lambda photo, image: PhotoMask(load_mask(_user_mask_file(folder, photo), image.size), 0.5, {})
    from eqdiff.prep.grounded_sam import grounded_sam_mask, load_grounded_sam  # heavy imports, only when used

    models = load_grounded_sam(config)
    return lambda photo, image: grounded_sam_mask(models, image, subject.class_noun, config, photo)


def masks_key(subject: Subject, config: MasksConfig) -> dict[str, Any]:
    """What the masks depend on: photo bytes, class noun, the masks config (and the user's mask files, or the
    refinement's revision)."""
    key: dict[str, Any] = {
        "photos": {photo.name: file_digest(photo) for photo in subject.photos},
        "class_noun": subject.class_noun,
        "config": section_to_dict(config),
    }
    if config.backend == MaskBackend.U2NETP and config.refine:
        key["refinement"] = REFINEMENT_REVISION
    if config.backend == MaskBackend.FILES:
        folder = files_dir(config, subject)
        if folder.is_dir():
            key["mask_files"] = {p.name: file_digest(p) for p in image_files(folder)}
    return normalised(key)


# ------------------------------------------------------------------------------------------------- stage


def _photo_masks(subject: Subject, images: list[Image.Image], config: MasksConfig) -> list[PhotoMask]:
    """Every photo's mask from the configured backend (refined across photos for u2netp unless disabled)."""
    # Every photo is read, and the backend's model loaded, before the progress bar starts: a bad file or a
    # missing checkpoint is one stderr line (docs/robustness.md); the files backend shows no bar at all.
    refine = config.backend == MaskBackend.U2NETP and config.refine
    mask_fn = None if refine else _mask_fn(config, subject)
    bar = tqdm(
        list(zip(subject.photos, images, strict=True)),
        desc=f"masks {subject.name}",
        unit="photo",
        disable=config.backend == MaskBackend.FILES,
    )
    if refine:
        plain, multi = zip(*(saliency_views(image, config.threshold) for _, image in bar), strict=True)
        photos = [np.asarray(image.convert("RGB")) for image in images]
        refined = refine_subject(photos, list(multi), config.threshold, plain_saliencies=list(plain))
        for photo, result in zip(subject.photos, refined, strict=True):
            if result.details["fallback"]:
                logger.info(
                    "%s: refinement kept %.0f%% of the plain U²-Netp mask's body; using the plain mask",
                    photo.name,
                    100 * result.details["kept_of_plain"],
                )
        return [PhotoMask(r.mask, config.threshold, {"refined": True, **r.details}) for r in refined]
    return [mask_fn(photo, image) for photo, image in bar]


def _write_masks(subject: Subject, config: MasksConfig, staging: Path) -> tuple[dict[str, MaskRecord], list[str]]:
    """Write every photo's mask and the overlay sheet into ``staging``; return (records, warnings)."""
    images = [load_image(photo) for photo in subject.photos]
    results = _photo_masks(subject, images, config)
    for photo, result in zip(subject.photos, results, strict=True):
        if not result.mask.any():
            raise DataError(
                f"{photo}: the {config.backend.value} mask is empty (no foreground pixel); "
                "try another backend or give the mask with backend files"
            )
    findings = check_masks([photo.name for photo in subject.photos], [r.mask for r in results])
    records: dict[str, MaskRecord] = {}
    warnings: list[str] = []
    tiles: list[Image.Image] = []
    for photo, image, result in zip(subject.photos, images, results, strict=True):
        fraction = float(result.mask.mean())
        found = list(findings[photo.name])
        if fraction > config.max_foreground_warn:
            found.append(f"{photo.name}: mask covers {fraction:.1%} of the photo (> {config.max_foreground_warn:.0%})")
        for line in found:
            warnings.append(f"{line}; check overlay.png")
            logger.warning("%s", warnings[-1])
        save_png(staging / f"{photo.stem}.png", Image.fromarray(result.mask.astype(np.uint8) * 255, "L"))
        tile = overlay(image, result.mask, TILE)
        fallback = bool(result.details.get("fallback"))
        label = f"{photo.stem}  {fraction:.1%}{'  plain (refinement fell back)' if fallback else ''}"
        tiles.append(labelled(tile, label, marked=bool(found), noted=fallback))
        records[photo.stem] = MaskRecord(
            photo.name, round(fraction, 6), config.backend.value, result.threshold, result.details, tuple(found)
        )
    save_png(staging / "overlay.png", tile_sheet(grid(tiles), TILE))
    return records, warnings


def compute_masks(subject: Subject, out_dir: str | Path, config: MasksConfig) -> Path:
    """Write ``out_dir/<stem>.png`` per photo, ``overlay.png`` and ``masks.json``; return ``out_dir``.

    Masks are (H, W) at each photo's display-orientation size, mode L, 0 or 255. An empty mask is a
    DataError naming the photo (nothing is written); a mask covering more than ``max_foreground_warn`` of its
    photo, and every finding of the self-checks, is a warning: logged, listed in ``masks.json`` (all of them
    under ``warnings``, each photo's under its ``checks``) and marked on ``overlay.png``. Unchanged inputs
    (same key in ``masks.json``) rewrite nothing.
    """
    out_dir = Path(out_dir)
    for photo in subject.photos:
        if photo.stem in RESERVED_STEMS:
            raise DataError(f"{photo}: the stem {photo.stem!r} is reserved in the masks folder; rename the photo")
    with OutputLock(out_dir):
        key = masks_key(subject, config)
        outputs = [out_dir / f"{p.stem}.png" for p in subject.photos] + [out_dir / "overlay.png"]
        if is_up_to_date(out_dir / MasksManifest.FILE, key, outputs, MasksManifest):
            logger.info("%s: masks up to date", out_dir)
            return out_dir
        with staged_directory(out_dir) as staging:
            records, warnings = _write_masks(subject, config, staging)
            manifest = MasksManifest(subject.name, subject.class_noun, records, tuple(warnings), key)
            write_json(staging / MasksManifest.FILE, manifest.to_json())
        logger.info(
            "%s: %d masks, %d warning(s); check %s", out_dir, len(records), len(warnings), out_dir / "overlay.png"
        )
    return out_dir
