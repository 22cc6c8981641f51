"""Contact sheets (``eqdiff/io/sheets.py``): overlays that keep the subject's colours, labelled columns, marks."""

from __future__ import annotations

import numpy as np
import torch
from PIL import Image

from eqdiff.io.sheets import HEADER, LABELLED_MIN_SIDE, MARK_COLOUR, OUTLINE_COLOUR, grid, labelled, overlay, tile_sheet
from eqdiff.prep.bands import BAND_SHEET_COLUMNS, band_sheet


def _photo() -> tuple[Image.Image, np.ndarray]:
    rng = np.random.default_rng(0)
    pixels = rng.integers(0, 256, (128, 128, 3), dtype=np.uint8)
    mask = np.zeros((128, 128), bool)
    mask[30:100, 40:90] = True
    return Image.fromarray(pixels), mask


def test_overlay_shows_the_subject_as_it_is_and_dims_the_background():
    image, mask = _photo()
    tile = np.asarray(overlay(image, mask, 128)).astype(int)
    photo = np.asarray(image).astype(int)
    inner = np.zeros_like(mask)
    inner[35:95, 45:85] = True  # inside the mask, away from its outline
    assert np.abs(tile[inner] - photo[inner]).max() <= 1  # the subject's own colours, untinted
    outside = np.zeros_like(mask)
    outside[:20] = True
    assert np.allclose(tile[outside], 0.35 * photo[outside], atol=1.5)
    outline = (tile == OUTLINE_COLOUR).all(axis=-1)
    assert outline[30:100, 40:90].any() and not outline[inner].any() and not outline[outside].any()


def test_band_sheet_columns_are_labelled_and_a_marked_tile_is_framed():
    targets = torch.rand(2, 3, 64, 64) * 2 - 1
    masks = (torch.rand(2, 1, 64, 64) > 0.5).float()
    sheet = np.asarray(band_sheet(targets, targets.abs(), targets.abs(), masks))
    side = LABELLED_MIN_SIDE  # 64 px targets, enlarged under the labels
    assert sheet.shape == (HEADER + 2 * (side + 2) + 2, 4 * (side + 2) + 2, 3)
    for column in range(len(BAND_SHEET_COLUMNS)):  # dark label text above each column of the white header
        header = sheet[:HEADER, 2 + column * (side + 2) : 2 + column * (side + 2) + side]
        assert (header.min(axis=-1) < 100).sum() > 20, BAND_SHEET_COLUMNS[column]
    plain = tile_sheet(grid([Image.new("RGB", (8, 8), "blue")] * 3), 32)
    assert plain.size == (2 * 34 + 2, 2 * 34 + 2)  # near-square grid, no header without labels
    marked = np.asarray(labelled(Image.new("RGB", (64, 64), "grey"), "00", marked=True))
    assert (marked[32, 0] == MARK_COLOUR).all() and (marked[32, -1] == MARK_COLOUR).all()
    assert not (np.asarray(labelled(Image.new("RGB", (64, 64), "grey"), "00"))[32, 0] == MARK_COLOUR).all()
