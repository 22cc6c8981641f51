"""Review of the subject-mask refinement by eye (docs/method.md, "Masks"): plain U²-Netp against refined.

For every subject folder under DATA (a folder of photos per subject, as in DreamBooth's ``dataset/``), the script
writes ``OUT/<subject>.png``, one row per photo: the photo, the plain U²-Netp mask (``masks.refine: false``),
the refined one (``eqdiff.prep.mask_refine.refine_subject``, as the masks stage runs it), each drawn as the masks
stage's overlay, and their difference (what refinement took out in magenta, what it added in cyan). The refined
tile's label gives the share of the plain mask's pixels it keeps; a photo where the refinement fell back to the
plain mask says "fallback" and has the masks stage's blue frame for it.
``OUT/kept.csv`` lists every photo (subject, photo, kept share, share of the body kept (step 7), fallback) and
the photos keeping less than ``--below`` (90 % by default) of the plain mask are printed.

U²-Netp is the slow part (about 10 s a photo on 2 cores, 25 minutes for DreamBooth's 25 subjects); ``--cache DIR``
keeps each subject's saliencies in ``DIR/<subject>.npz`` so a change to the refinement re-runs in a minute::

    .venv/bin/python scripts/mask_review.py /path/to/dreambooth/dataset --out /tmp/mask-review --cache /tmp/sal
    .venv/bin/python scripts/mask_review.py DATA --out OUT --cache /tmp/sal --subjects can dog2

Nothing is written into the repository and nothing is read from it but the code.
"""

from __future__ import annotations

import argparse
import csv
import logging
from pathlib import Path

import numpy as np
from PIL import Image

from eqdiff.config import MasksConfig
from eqdiff.io.sheets import fit, labelled, overlay, tile_sheet
from eqdiff.prep.mask_refine import refine_subject
from eqdiff.prep.masks import TILE
from eqdiff.prep.subjects import image_files, load_image
from eqdiff.prep.u2netp import saliency_views

THRESHOLD = MasksConfig().threshold
"""``masks.threshold``'s default, as the masks stage uses it."""
LOST = (255, 0, 255)
"""Colour of the plain mask's pixels the refined mask leaves out (the difference tile)."""
ADDED = (0, 255, 255)
"""Colour of the pixels the refined mask adds to the plain one."""

logger = logging.getLogger("mask_review")


def saliencies(folder: Path, images: list[Image.Image], cache: Path | None) -> tuple[list, list]:
    """(plain, multi-scale) saliency per photo of ``folder``, from ``cache/<subject>.npz`` when it holds them."""
    names = [p.name for p in image_files(folder)]
    stored = cache / f"{folder.name}.npz" if cache else None
    if stored and stored.is_file():
        data = np.load(stored)
        if list(data["names"]) == names:
            return [data[f"plain{k}"] for k in range(len(names))], [data[f"multi{k}"] for k in range(len(names))]
    logger.info("%s: U²-Netp on %d photos", folder.name, len(images))
    plain, multi = (list(views) for views in zip(*(saliency_views(i, THRESHOLD) for i in images), strict=True))
    if stored:
        stored.parent.mkdir(parents=True, exist_ok=True)
        arrays = {f"plain{k}": s for k, s in enumerate(plain)} | {f"multi{k}": s for k, s in enumerate(multi)}
        np.savez_compressed(stored, names=np.array(names), **arrays)
    return plain, multi


def difference(image: Image.Image, plain: np.ndarray, refined: np.ndarray) -> Image.Image:
    """The photo dimmed, with the pixels refinement took out of the plain mask in ``LOST`` and added in ``ADDED``."""
    pixels = (0.35 * np.asarray(image.convert("RGB"), dtype=np.float32)).astype(np.uint8)
    pixels[plain & ~refined] = LOST
    pixels[refined & ~plain] = ADDED
    return fit(Image.fromarray(pixels, mode="RGB"), TILE)


def review_subject(folder: Path, out: Path, cache: Path | None) -> list[dict[str, str | float]]:
    """Write ``out/<subject>.png`` and return one row per photo (subject, photo, kept, body_kept, fallback)."""
    paths = image_files(folder)
    images = [load_image(p) for p in paths]
    plain_saliency, multi = saliencies(folder, images, cache)
    photos = [np.asarray(i.convert("RGB")) for i in images]
    refined = refine_subject(photos, multi, THRESHOLD, plain_saliencies=plain_saliency)
    rows, tiles = [], []
    for path, image, saliency, result in zip(paths, images, plain_saliency, refined, strict=True):
        plain = saliency >= THRESHOLD
        kept = float((plain & result.proposal).sum() / max(int(plain.sum()), 1))
        fallback = "fallback" if result.details.get("fallback") else ""
        label = f"refined, keeps {kept:.0%}"
        refined_tile = overlay(image, result.proposal, TILE)  # a fallback shows what was refused
        tiles.append(
            [
                labelled(image.convert("RGB"), f"{folder.name}/{path.stem}"),
                labelled(overlay(image, plain, TILE), f"plain {plain.mean():.1%}"),
                labelled(refined_tile, f"fallback, {label}" if fallback else label, noted=bool(fallback)),
                labelled(difference(image, plain, result.proposal), "lost / added"),
            ]
        )
        body = float(result.details.get("kept_of_plain", 1.0))
        row = {"subject": folder.name, "photo": path.stem, "kept": round(kept, 4), "body_kept": round(body, 4)}
        rows.append(row | {"fallback": fallback})
    tile_sheet(tiles, TILE, ["photo", "plain U2-Netp", "refined", "lost / added"]).save(out / f"{folder.name}.png")
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("data", type=Path, help="folder of subject folders (photos at each one's top level)")
    parser.add_argument("--out", type=Path, required=True, help="folder for <subject>.png and kept.csv")
    parser.add_argument("--cache", type=Path, help="folder for the saliencies (<subject>.npz), reused when present")
    parser.add_argument("--subjects", nargs="*", help="only these subject folders")
    parser.add_argument("--below", type=float, default=0.9, help="print the photos keeping less than this share")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    folders = sorted(p for p in args.data.iterdir() if p.is_dir() and image_files(p))
    folders = [p for p in folders if not args.subjects or p.name in args.subjects]
    if not folders:
        parser.error(f"{args.data}: no subject folder with photos")
    args.out.mkdir(parents=True, exist_ok=True)
    rows = [row for folder in folders for row in review_subject(folder, args.out, args.cache)]
    with (args.out / "kept.csv").open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=["subject", "photo", "kept", "body_kept", "fallback"])
        writer.writeheader()
        writer.writerows(rows)
    for row in rows:
        if row["kept"] < args.below or row["fallback"]:
            logger.info(
                "%s/%s keeps %.1f%% of plain %s", row["subject"], row["photo"], 100 * row["kept"], row["fallback"]
            )
    logger.info("%d photos; sheets and kept.csv in %s", len(rows), args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
