"""Contact sheets: the one way the stages lay images out for a person to check (masks, augment, bands, gallery).

A sheet is rows of square tiles with optional column labels above them; a tile is an image fitted into a
``side`` x ``side`` square (aspect ratio kept, centred), optionally with a label at its top left and a frame: red
marking it as suspect, blue marking a note (a mask the refinement gave up on, see ``eqdiff.prep.masks``).
"""

from __future__ import annotations

import math

import numpy as np
from PIL import Image, ImageDraw, ImageFont
from scipy import ndimage

LABEL_SIZE = 16
"""Font size of tile and column labels, in pixels."""
HEADER = LABEL_SIZE + 12
"""Height of a sheet's column-label row, in pixels."""
LABELLED_MIN_SIDE = 128
"""Tiles under column labels are at least this wide (64 px images are shown enlarged), so the labels fit."""
MARK_COLOUR = (230, 30, 30)
"""Frame colour of a tile marked as suspect."""
NOTE_COLOUR = (40, 140, 255)
"""Frame colour of a tile that carries a note rather than a warning (blue: unlike the red of a suspect tile)."""
OUTLINE_COLOUR = (255, 230, 0)
"""Colour of a mask's outline on an overlay (yellow: visible on most photos, unlike the subject's own colours)."""


def thumbnail(image: Image.Image, side: int) -> Image.Image:
    """A copy of ``image`` no larger than ``side`` on its long side (smaller images are kept as they are)."""
    copy = image.copy()
    copy.thumbnail((side, side), Image.Resampling.LANCZOS)
    return copy


def fit(image: Image.Image, side: int, background: tuple[int, int, int] = (32, 32, 32)) -> Image.Image:
    """``image`` scaled to fit a ``side`` x ``side`` RGB tile, centred on ``background``."""
    scaled = image.convert("RGB")
    scale = side / max(scaled.size)
    size = (max(1, round(scaled.width * scale)), max(1, round(scaled.height * scale)))
    scaled = scaled.resize(size, Image.Resampling.BILINEAR)
    tile = Image.new("RGB", (side, side), background)
    tile.paste(scaled, ((side - scaled.width) // 2, (side - scaled.height) // 2))
    return tile


def _text(draw: ImageDraw.ImageDraw, xy: tuple[int, int], text: str, colour: tuple[int, int, int]) -> None:
    font = ImageFont.load_default(size=LABEL_SIZE)
    left, top, right, bottom = draw.textbbox(xy, text, font=font)
    draw.rectangle((left - 3, top - 3, right + 3, bottom + 3), fill=(0, 0, 0))
    draw.text(xy, text, fill=colour, font=font)


def labelled(tile: Image.Image, label: str, marked: bool = False, noted: bool = False) -> Image.Image:
    """A copy of ``tile`` with ``label`` at its top left; ``marked``: a red frame and a red "!" label; ``noted``
    (unless marked): a blue frame and a blue label."""
    tile = tile.convert("RGB").copy()
    draw = ImageDraw.Draw(tile)
    colour = MARK_COLOUR if marked else NOTE_COLOUR if noted else None
    if colour is not None:
        width = max(3, tile.width // 48)
        draw.rectangle((0, 0, tile.width - 1, tile.height - 1), outline=colour, width=width)
    _text(draw, (6, 6), f"! {label}" if marked else label, colour or (255, 255, 255))
    return tile


def overlay(image: Image.Image, mask: np.ndarray, side: int) -> Image.Image:
    """A ``side`` tile of ``image`` with its (H, W) bool ``mask`` shown without hiding the subject's colours:
    the subject as it is, the background dimmed, the mask's outline drawn in ``OUTLINE_COLOUR``."""
    photo = np.asarray(image.convert("RGB"), dtype=np.float32)
    shown = np.where(mask[..., None], photo, 0.35 * photo).astype(np.uint8)
    tile = fit(Image.fromarray(shown, mode="RGB"), side)
    small = np.asarray(fit(Image.fromarray(mask.astype(np.uint8) * 255, mode="L"), side, (0, 0, 0)).convert("L"))
    inside = small >= 128
    width = max(1, side // 128)
    outline = inside & ~ndimage.binary_erosion(inside, iterations=width, border_value=1)
    pixels = np.array(tile)
    pixels[outline] = OUTLINE_COLOUR
    return Image.fromarray(pixels, mode="RGB")


def tile_sheet(
    rows: list[list[Image.Image]],
    side: int,
    column_labels: list[str] | None = None,
    gap: int = 2,
) -> Image.Image:
    """``rows`` of tiles (each fitted to ``side``) on a white sheet, with ``column_labels`` in a header row
    (then tiles are at least ``LABELLED_MIN_SIDE``)."""
    columns = max(len(row) for row in rows)
    header = HEADER if column_labels else 0
    side = max(side, LABELLED_MIN_SIDE) if column_labels else side
    width = columns * (side + gap) + gap
    sheet = Image.new("RGB", (width, header + len(rows) * (side + gap) + gap), (255, 255, 255))
    if column_labels:
        draw = ImageDraw.Draw(sheet)
        font = ImageFont.load_default(size=LABEL_SIZE)
        for c, label in enumerate(column_labels):
            draw.text((gap + c * (side + gap) + side // 2, header // 2), label, fill=(0, 0, 0), font=font, anchor="mm")
    for r, row in enumerate(rows):
        for c, tile in enumerate(row):
            shown = tile if tile.size == (side, side) and tile.mode == "RGB" else fit(tile, side)
            sheet.paste(shown, (gap + c * (side + gap), header + gap + r * (side + gap)))
    return sheet


def grid(tiles: list[Image.Image]) -> list[list[Image.Image]]:
    """``tiles`` as the rows of a near-square grid (for ``tile_sheet``)."""
    columns = math.ceil(math.sqrt(len(tiles)))
    return [tiles[i : i + columns] for i in range(0, len(tiles), columns)]
