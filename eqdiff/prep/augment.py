"""Reference augmentation (paper §4.3 training references; docs/method.md, Data and batch;
docs/official-code.md §1.3-§1.4).

* **Instance references** — another photo of the subject, zoomed out onto a mid-grey canvas (p ~ 0.66,
  side s ~ U[170, 512] at 512 px) or zoomed in and randomly cropped (s ~ U[614, 716]), randomly translated;
  flips and rotations are options (the paper mentions them, the official run has them off). The subject
  mask goes through the same geometry with nearest resampling. The ``augment`` stage materialises a fixed,
  seeded set of views per photo (``augment_subject``), so a run is reproducible and cacheable.
* **Prior references** — the class image itself through MoCo-v2's augmentations (``moco_view``).

All randomness comes from a ``random.Random`` seeded by the caller: nothing touches a global RNG.
"""

from __future__ import annotations

import hashlib
import logging
import math
import random
from pathlib import Path

import numpy as np
from PIL import Image, ImageEnhance, ImageFilter, ImageOps
from tqdm import tqdm

from eqdiff.config import AugmentConfig, section_to_dict
from eqdiff.config.base import OFFICIAL_RESOLUTION
from eqdiff.io.artifacts import OutputLock, save_png, staged_directory, write_json
from eqdiff.io.manifests import is_up_to_date, subject_inputs
from eqdiff.io.schemas.stage_manifests import AugmentManifest
from eqdiff.io.sheets import tile_sheet
from eqdiff.prep.subjects import Subject, center_crop_resize, load_image, load_mask

logger = logging.getLogger(__name__)

CANVAS_GREY = (128, 128, 128)
"""Zoom-out canvas: the official code pads with 0.0 in [-1, 1], i.e. mid-grey (128 maps to +0.004)."""

View = tuple[Image.Image, Image.Image | None]


def _zoom(image: Image.Image, mask: Image.Image | None, side: int, config: AugmentConfig, rng: random.Random) -> View:
    """One zoom-out (paste on grey) or zoom-in (random crop) view; the mask follows the same geometry."""
    zoom_out = rng.random() < config.zoom_out_prob
    low, high = config.zoom_out_scale if zoom_out else config.zoom_in_scale
    # Official: randint(170, 513) / randint(614, 716) at 512 px; a uniform integer side, scaled to ``side``.
    scale = max(1, round(rng.uniform(low, high) * side / OFFICIAL_RESOLUTION))
    image = image.resize((scale, scale), Image.Resampling.BILINEAR)
    mask = mask.resize((scale, scale), Image.Resampling.NEAREST) if mask is not None else None
    if scale == side:
        return image, mask
    if scale < side:
        left, top = rng.randint(0, side - scale), rng.randint(0, side - scale)
        canvas = Image.new("RGB", (side, side), CANVAS_GREY)
        canvas.paste(image, (left, top))
        if mask is not None:
            mask_canvas = Image.new("L", (side, side), 0)
            mask_canvas.paste(mask, (left, top))
            mask = mask_canvas
        return canvas, mask
    left, top = rng.randint(0, scale - side), rng.randint(0, scale - side)
    box = (left, top, left + side, top + side)
    return image.crop(box), (mask.crop(box) if mask is not None else None)


def reference_views(
    image: Image.Image, mask: np.ndarray | None, side: int, num_views: int, config: AugmentConfig, seed: int
) -> list[View]:
    """Seeded instance reference views of one photo (docs/method.md, Data and batch, docs/official-code.md §1.3).

    Args:
        image: the photo, RGB, any size (as ``data.load_image`` returns it).
        mask: its subject mask, (H, W) bool at the photo's size, or None.
        side: output side in pixels (the training resolution).
        num_views: how many views to draw.
        seed: the only source of randomness; equal seeds give equal views.
    Returns:
        ``num_views`` pairs (RGB side x side image, L side x side mask in {0, 255} or None).
    """
    rng = random.Random(seed)
    base = center_crop_resize(image.convert("RGB"), side)
    base_mask = None
    if mask is not None:
        mask_image = Image.fromarray(np.asarray(mask, dtype=bool).astype(np.uint8) * 255, mode="L")
        base_mask = center_crop_resize(mask_image, side, resample=Image.Resampling.NEAREST)
    views = []
    for _ in range(num_views):
        view, view_mask = _zoom(base, base_mask, side, config, rng)
        if config.hflip and rng.random() < 0.5:
            view = ImageOps.mirror(view)
            view_mask = ImageOps.mirror(view_mask) if view_mask is not None else None
        if config.rotation_degrees > 0:
            angle = rng.uniform(-config.rotation_degrees, config.rotation_degrees)
            view = view.rotate(angle, Image.Resampling.BILINEAR, fillcolor=CANVAS_GREY)
            if view_mask is not None:
                view_mask = view_mask.rotate(angle, Image.Resampling.NEAREST, fillcolor=0)
        views.append((view, view_mask))
    return views


# ----------------------------------------------------------------------------------------------------------
# MoCo-v2 augmentation of prior references. Adapted from MoCo v2 (facebookresearch/moco, main_moco.py
# ``augmentation`` with ``--aug-plus``) as the official EqDiff code uses it; the geometry follows
# torchvision's RandomResizedCrop.get_params, implemented with PIL and a seeded ``random.Random`` so no
# global RNG is read.


def _random_resized_crop_box(
    width: int,
    height: int,
    rng: random.Random,
    scale: tuple[float, float] = (0.2, 1.0),
    ratio: tuple[float, float] = (3 / 4, 4 / 3),
) -> tuple[int, int, int, int]:
    area = width * height
    log_ratio = (math.log(ratio[0]), math.log(ratio[1]))
    for _ in range(10):
        target_area = area * rng.uniform(*scale)
        aspect = math.exp(rng.uniform(*log_ratio))
        w, h = round(math.sqrt(target_area * aspect)), round(math.sqrt(target_area / aspect))
        if 0 < w <= width and 0 < h <= height:
            left, top = rng.randint(0, width - w), rng.randint(0, height - h)
            return left, top, left + w, top + h
    side = min(width, height)  # fallback: the central square, as torchvision's fallback for in-range ratios
    left, top = (width - side) // 2, (height - side) // 2
    return left, top, left + side, top + side


def _adjust_hue(image: Image.Image, hue: float) -> Image.Image:
    # torchvision's PIL adjust_hue: shift the H channel of HSV by hue * 255 (uint8 wrap-around).
    h, s, v = image.convert("HSV").split()
    shifted = (np.asarray(h, dtype=np.int16) + round(hue * 255)) % 256
    return Image.merge("HSV", (Image.fromarray(shifted.astype(np.uint8), "L"), s, v)).convert("RGB")


def _color_jitter(image: Image.Image, rng: random.Random, strength: float = 0.4, hue: float = 0.1) -> Image.Image:
    ops = [
        lambda im, f: ImageEnhance.Brightness(im).enhance(f),
        lambda im, f: ImageEnhance.Contrast(im).enhance(f),
        lambda im, f: ImageEnhance.Color(im).enhance(f),
    ]
    factors = [rng.uniform(1 - strength, 1 + strength) for _ in ops]
    hue_shift = rng.uniform(-hue, hue)
    order = list(range(4))
    rng.shuffle(order)  # torchvision applies the four adjustments in a random order
    for index in order:
        image = _adjust_hue(image, hue_shift) if index == 3 else ops[index](image, factors[index])
    return image


def moco_view(image: Image.Image, side: int, seed: int) -> Image.Image:
    """A MoCo-v2 view of a class image for its prior reference (docs/official-code.md §1.4); RGB ``side`` x ``side``.

    RandomResizedCrop(side, scale=(0.2, 1)) bilinear; ColorJitter(0.4, 0.4, 0.4, 0.1) with p = 0.8;
    RandomGrayscale(0.2); Gaussian blur sigma ~ U[0.1, 2] with p = 0.5; horizontal flip with p = 0.5.
    Deterministic in ``seed``.
    """
    rng = random.Random(seed)
    image = image.convert("RGB")
    box = _random_resized_crop_box(image.width, image.height, rng)
    view = image.resize((side, side), Image.Resampling.BILINEAR, box=box)
    if rng.random() < 0.8:
        view = _color_jitter(view, rng)
    if rng.random() < 0.2:
        view = view.convert("L").convert("RGB")
    if rng.random() < 0.5:
        view = view.filter(ImageFilter.GaussianBlur(radius=rng.uniform(0.1, 2.0)))
    if rng.random() < 0.5:
        view = ImageOps.mirror(view)
    return view


# ----------------------------------------------------------------------------------------------------------
# The ``augment`` stage.


def view_seed(seed: int, stem: str) -> int:
    """Seed of one photo's views from (config seed, file stem): a new photo leaves the others' views alone."""
    return int.from_bytes(hashlib.sha256(f"{seed}:{stem}".encode()).digest()[:8], "little")


def augment_subject(subject: Subject, masks_dir: Path, out_dir: Path, side: int, config: AugmentConfig) -> Path:
    """Write ``views_per_photo`` reference views and masks per photo, a manifest and a contact sheet.

    Layout: ``out_dir/views/<stem>_<k>.png`` (RGB side x side), ``out_dir/masks/<stem>_<k>.png``
    (L, {0, 255}), ``out_dir/augment.json`` (``AugmentManifest``: per photo its view file names; the key: input
    digests + options + side) and ``out_dir/sheet.png`` (per photo: each view with its mask beside it, labelled
    columns). Every input is validated before anything is written; the directory is swapped in whole. With
    unchanged inputs and options nothing is rewritten.
    """
    out_dir = Path(out_dir)
    key = {
        "inputs": subject_inputs(subject, masks_dir),
        "options": section_to_dict(config),
        "resolution": side,
    }
    if is_up_to_date(out_dir / AugmentManifest.FILE, key, [out_dir / "sheet.png"], AugmentManifest):
        logger.info("%s: up to date, nothing rewritten", out_dir)
        return out_dir
    loaded = []
    for photo in subject.photos:  # validate everything before writing anything
        image = load_image(photo)
        loaded.append((photo.stem, image, load_mask(subject.mask_path(masks_dir, photo), image.size)))
    with OutputLock(out_dir), staged_directory(out_dir) as staging:
        views_of, sheet_rows = {}, []
        for stem, image, mask in tqdm(loaded, desc="augment", unit="photo"):
            seed = view_seed(config.seed, stem)
            views = reference_views(image, mask, side, config.views_per_photo, config, seed)
            names = []
            for k, (view, view_mask) in enumerate(views):
                name = f"{stem}_{k}.png"
                save_png(staging / "views" / name, view)
                save_png(staging / "masks" / name, view_mask)
                names.append(name)
            views_of[stem] = names
            sheet_rows.append([tile for view, view_mask in views for tile in (view, view_mask)])
        labels = [f"{what} {k + 1}" for k in range(config.views_per_photo) for what in ("view", "mask")]
        save_png(staging / "sheet.png", tile_sheet(sheet_rows, side, column_labels=labels))
        write_json(staging / AugmentManifest.FILE, AugmentManifest(key, views_of).to_json())
    logger.info("%s: %d views of %d photos", out_dir, sum(map(len, views_of.values())), len(loaded))
    return out_dir
