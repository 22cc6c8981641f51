"""Subject folders, image and mask loading with validation at the boundary, target preprocessing (docs/method.md, Data
and batch; docs/robustness.md).

A subject folder holds the photos (``*.jpg|*.jpeg|*.png|*.webp``) at its top level; masks, when present, live
in ``<subject>/masks/<stem>.png`` (the ``masks`` stage writes them there or elsewhere by path). Names that start
with ``.`` are never photos (a folder copied from a Mac holds ``._00.jpg``, AppleDouble metadata, and
``.DS_Store``; Jupyter leaves ``.ipynb_checkpoints/``): ``image_files``, the one listing of such folders, skips
them with one INFO line (docs/robustness.md). Every image is
validated when it is read: corrupt, truncated, zero-byte or non-image files, decompression bombs and degenerate
sizes raise a one-line ``DataError`` naming the file; CMYK, 16-bit, palette, grey, RGBA and EXIF-rotated images
are converted correctly to 8-bit RGB in display orientation.
"""

from __future__ import annotations

import logging
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from eqdiff.config import ResizeMode
from eqdiff.errors import DataError

if TYPE_CHECKING:  # imported by the tensor conversions only: the report reads subject folders without torch
    import torch

logger = logging.getLogger(__name__)

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp", ".bmp")
MAX_PIXELS = 64_000_000
"""Larger images are refused as decompression bombs (Pillow's own limit is ~179 M with a warning)."""
MIN_SIDE = 16
"""Smaller sides carry no usable subject."""
MAX_ASPECT = 8.0
"""A 10000x10 strip is not a photo."""
IMAGENET_MEAN = np.array([0.485, 0.456, 0.406], dtype=np.float32)
IMAGENET_STD = np.array([0.229, 0.224, 0.225], dtype=np.float32)
"""The ImageNet normalisation the mask models (U²-Netp, GroundingDINO) were trained with."""


@dataclass(frozen=True)
class Subject:
    """A subject folder: its name, its photos (sorted) and the class noun."""

    name: str
    directory: Path
    photos: tuple[Path, ...]
    class_noun: str

    def mask_path(self, masks_dir: Path, photo: Path) -> Path:
        return masks_dir / f"{photo.stem}.png"


@dataclass(frozen=True)
class PhotoMask:
    """One photo's mask as a mask backend returns it: ``mask`` (H, W) bool at the photo's size, the threshold
    that made it and backend-specific ``details`` (recorded in ``masks.json``)."""

    mask: np.ndarray
    threshold: float
    details: dict[str, Any]


def image_files(directory: Path, suffixes: tuple[str, ...] = IMAGE_SUFFIXES) -> tuple[Path, ...]:
    """The files with an image suffix at the top level of ``directory``, sorted by name; hidden names (starting
    with ``.``) are skipped, and how many is logged once at INFO. Every stage that lists a folder of photos or
    masks lists it here."""
    entries = sorted(directory.iterdir())
    hidden = [p.name for p in entries if p.name.startswith(".")]
    if hidden:
        shown = ", ".join(hidden[:3]) + (", ..." if len(hidden) > 3 else "")
        logger.info("%s: skipped %d hidden file(s) (%s): not photos", directory, len(hidden), shown)
    return tuple(p for p in entries if not p.name.startswith(".") and p.suffix.lower() in suffixes and p.is_file())


def discover_subject(directory: str | Path, class_noun: str, min_photos: int = 2) -> Subject:
    """List a subject folder's photos; fewer than ``min_photos`` (RRA needs another photo as reference) is an error."""
    directory = Path(directory)
    if not directory.is_dir():
        raise DataError(f"{directory}: subject folder not found")
    if not class_noun or not class_noun.strip():
        raise DataError(f"{directory}: a class noun is required (e.g. 'toy', 'dog')")
    photos = image_files(directory)
    if len(photos) < min_photos:
        raise DataError(
            f"{directory}: found {len(photos)} photo(s), expected at least {min_photos} "
            f"({', '.join(IMAGE_SUFFIXES)} at the folder's top level)"
        )
    stems = [p.stem for p in photos]
    if len(set(stems)) != len(stems):
        raise DataError(f"{directory}: two photos share a file stem; rename them so masks can be matched")
    return Subject(directory.name, directory, photos, class_noun.strip())


def _open_verified(path: Path) -> Image.Image:
    if not path.is_file():
        raise DataError(f"{path}: file not found")
    if path.stat().st_size == 0:
        raise DataError(f"{path}: empty file (0 bytes)")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as probe:
                width, height = probe.size
                if width * height > MAX_PIXELS:
                    raise DataError(f"{path}: {width}x{height} is too large (limit {MAX_PIXELS:,} pixels)")
                probe.verify()
            image = Image.open(path)
            image.load()
    except DataError:
        raise
    except (UnidentifiedImageError, Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise DataError(f"{path}: not a readable image (or a decompression bomb)") from None
    except OSError as exc:
        if exc.errno is not None:  # the file system (permission denied, ...), not the image's bytes
            raise
        raise DataError(f"{path}: corrupt or truncated image ({str(exc).splitlines()[0]})") from None
    except (SyntaxError, ValueError) as exc:
        raise DataError(f"{path}: corrupt or truncated image ({str(exc).splitlines()[0]})") from None
    return image


def _check_size(path: Path, image: Image.Image) -> None:
    width, height = image.size
    if min(width, height) < MIN_SIDE:
        raise DataError(f"{path}: {width}x{height} is too small (each side must be at least {MIN_SIDE} px)")
    if max(width, height) / min(width, height) > MAX_ASPECT:
        raise DataError(f"{path}: {width}x{height} aspect ratio exceeds {MAX_ASPECT:g}:1")


def load_image(path: str | Path) -> Image.Image:
    """Read a photo as 8-bit RGB in display orientation (EXIF applied); a DataError names a bad file."""
    path = Path(path)
    image = _open_verified(path)
    try:
        image = ImageOps.exif_transpose(image)
    except (OSError, ValueError, SyntaxError, TypeError):
        raise DataError(f"{path}: unreadable EXIF orientation") from None
    _check_size(path, image)
    if image.mode in ("I;16", "I;16B", "I;16L", "I"):
        # 16-bit grey: scale the full 16-bit range to 8 bits (PIL's convert('L') clips at 255). Dividing by
        # the image's own maximum would brighten every image whose brightest pixel is below white.
        array = np.asarray(image, dtype=np.float64)
        if array.max() > 65535:  # 32-bit integer images: no fixed range, so their maximum stands for white
            array = array / array.max() * 65535.0
        array = array / 257.0 if image.mode != "I" or array.max() > 255 else array
        image = Image.fromarray(array.round().clip(0, 255).astype(np.uint8), mode="L")
    if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
        rgba = image.convert("RGBA")
        canvas = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        image = Image.alpha_composite(canvas, rgba)
    return image.convert("RGB")


def load_mask(path: str | Path, size: tuple[int, int]) -> np.ndarray:
    """Read a subject mask and binarise it at 0.5; (H, W) bool. ``size`` is the photo's (width, height).

    A mask of another size, an empty mask or a non-image is a DataError naming the file.
    """
    path = Path(path)
    image = _open_verified(path)
    image = ImageOps.exif_transpose(image)
    if image.size != tuple(size):
        raise DataError(f"{path}: mask is {image.size[0]}x{image.size[1]}, expected the photo's {size[0]}x{size[1]}")
    grey = np.asarray(image.convert("L"), dtype=np.uint8)
    mask = grey >= 128
    if not mask.any():
        raise DataError(f"{path}: mask is empty (no foreground pixel)")
    return mask


def center_crop_resize(image: Image.Image, side: int, resample: int = Image.Resampling.BICUBIC) -> Image.Image:
    """Resize the short side to ``side`` and centre-crop a square (docs/method.md, Data and batch)."""
    width, height = image.size
    scale = side / min(width, height)
    new_w, new_h = max(side, round(width * scale)), max(side, round(height * scale))
    image = image.resize((new_w, new_h), resample=resample)
    left, top = (new_w - side) // 2, (new_h - side) // 2
    return image.crop((left, top, left + side, top + side))


def image_to_tensor(image: Image.Image) -> torch.Tensor:
    """PIL RGB -> (3, H, W) float32 in [-1, 1]."""
    import torch

    array = np.asarray(image.convert("RGB"), dtype=np.float32)
    return torch.from_numpy(array).permute(2, 0, 1) / 127.5 - 1.0


def mask_to_tensor(mask: np.ndarray | Image.Image) -> torch.Tensor:
    """bool (H, W) array or L image -> (1, H, W) float32 in {0, 1}."""
    import torch

    array = np.asarray(mask)
    array = array >= 128 if array.dtype == np.uint8 else array.astype(bool)
    return torch.from_numpy(array.astype(np.float32)).unsqueeze(0)


def tensor_to_image(tensor: torch.Tensor) -> Image.Image:
    """(3, H, W) float in [-1, 1] -> PIL RGB (values clamped)."""
    array = ((tensor.detach().float().cpu().clamp(-1, 1) + 1.0) * 127.5).round().byte()
    return Image.fromarray(array.permute(1, 2, 0).numpy(), mode="RGB")


def preprocess_target(
    photo: Path, mask_path: Path | None, side: int, resize: ResizeMode = ResizeMode.CROP
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """A training target: (3, side, side) in [-1, 1] and its (1, side, side) {0,1} mask (or None).

    ``crop`` (default): the short side is resized to ``side`` (bicubic) and centre-cropped, keeping the aspect
    ratio. ``squash``: the official PIL bilinear resize to side × side (non-square photos are distorted). The
    mask goes through the same geometry with nearest resampling.
    """
    image = load_image(photo)
    if resize == ResizeMode.SQUASH:
        target = image_to_tensor(image.resize((side, side), Image.Resampling.BILINEAR))
    else:
        target = image_to_tensor(center_crop_resize(image, side))
    if mask_path is None:
        return target, None
    mask = load_mask(mask_path, image.size)
    mask_image = Image.fromarray(mask.astype(np.uint8) * 255, mode="L")
    if resize == ResizeMode.SQUASH:
        resized = mask_image.resize((side, side), Image.Resampling.NEAREST)
    else:
        resized = center_crop_resize(mask_image, side, resample=Image.Resampling.NEAREST)
    return target, mask_to_tensor(resized)
