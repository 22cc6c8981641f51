"""A synthetic sample subject the project makes itself: the embedded demo's and the tests' input
(docs/architecture.md, Offline models and data).

Nothing is downloaded or copied: each photo is a seeded drawing of the same "toy" (a two-colour body with eyes
and a base) at a different position, scale and rotation on a different textured background, with its exact
mask. Photos are deliberately not square and not all the same size, so cropping and mask handling run for real.
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

from eqdiff.io.artifacts import write_bytes
from eqdiff.io.output_safety import OutputError, check_parent


def _background(rng: np.random.Generator, width: int, height: int) -> Image.Image:
    base = rng.integers(40, 220, size=3)
    noise = rng.normal(0, 18, size=(height // 8 + 1, width // 8 + 1, 3))
    tile = np.clip(base + noise, 0, 255).astype(np.uint8)
    image = Image.fromarray(tile, mode="RGB").resize((width, height), Image.Resampling.BICUBIC)
    draw = ImageDraw.Draw(image)
    for _ in range(6):  # stripes: a background texture that a good concept should not learn
        x = int(rng.integers(0, width))
        colour = tuple(int(c) for c in rng.integers(0, 255, size=3))
        draw.line([(x, 0), (x + int(rng.integers(-40, 40)), height)], fill=colour, width=int(rng.integers(2, 6)))
    return image.filter(ImageFilter.GaussianBlur(1.0))


def _toy(scale: float) -> tuple[Image.Image, Image.Image]:
    side = max(24, int(96 * scale))
    body = Image.new("RGB", (side, side), (0, 0, 0))
    mask = Image.new("L", (side, side), 0)
    draw, mdraw = ImageDraw.Draw(body), ImageDraw.Draw(mask)
    s = side / 96
    shapes = [((18, 8, 78, 68), (230, 120, 30)), ((10, 58, 86, 92), (40, 90, 200))]
    for box, colour in shapes:
        scaled = tuple(int(v * s) for v in box)
        draw.ellipse(scaled, fill=colour)
        mdraw.ellipse(scaled, fill=255)
    for cx in (36, 60):
        draw.ellipse(tuple(int(v * s) for v in (cx - 7, 24, cx + 7, 38)), fill=(250, 250, 250))
        draw.ellipse(tuple(int(v * s) for v in (cx - 3, 29, cx + 3, 35)), fill=(10, 10, 10))
    return body, mask


def _png(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def make_sample_subject(directory: str | Path, num_photos: int = 4, seed: int = 0, with_masks: bool = True) -> Path:
    """Write ``num_photos`` photos (``NN.png``) and, optionally, ``masks/NN.png`` into ``directory``.

    Everything is drawn before anything is written. A file already at one of those names is replaced only when
    it holds the very bytes this call writes (an earlier run with the same arguments); any other file there is
    somebody's photo, so that is an ``OutputError`` naming it and nothing is written.
    """
    directory = Path(directory)
    check_parent(directory)
    if directory.exists() and not directory.is_dir():
        raise OutputError(f"{directory}: is a file, expected a folder for the sample subject")
    rng = np.random.default_rng(seed)
    files: dict[Path, bytes] = {}
    for index in range(num_photos):
        width, height = int(rng.integers(112, 160)), int(rng.integers(96, 136))
        photo = _background(rng, width, height)
        toy, toy_mask = _toy(float(rng.uniform(0.6, 0.95)) * min(width, height) / 96)
        angle = float(rng.uniform(-20, 20))
        toy = toy.rotate(angle, resample=Image.Resampling.BICUBIC, expand=True)
        toy_mask = toy_mask.rotate(angle, resample=Image.Resampling.NEAREST, expand=True)
        left = int(rng.integers(0, max(1, width - toy.width)))
        top = int(rng.integers(0, max(1, height - toy.height)))
        photo.paste(toy, (left, top), toy_mask)
        mask = Image.new("L", (width, height), 0)
        mask.paste(toy_mask, (left, top))
        files[directory / f"{index:02d}.png"] = _png(photo)
        if with_masks:
            files[directory / "masks" / f"{index:02d}.png"] = _png(mask)
    return write_sample_files(directory, files)


def png_bytes(image: Image.Image) -> bytes:
    return _png(image)


def write_sample_files(directory: Path, files: dict[Path, bytes]) -> Path:
    """Write a drawn sample subject: a file already at one of the names is replaced only when it holds the very
    bytes this call writes; any other file there is somebody's photo (``OutputError`` naming it, nothing written)."""
    check_parent(directory)
    if directory.exists() and not directory.is_dir():
        raise OutputError(f"{directory}: is a file, expected a folder for the sample subject")
    for path, data in files.items():
        if path.is_dir() or (path.exists() and path.read_bytes() != data):
            raise OutputError(f"{path}: already exists and is not this sample's file; choose a new or empty folder")
    for path, data in files.items():
        write_bytes(path, data)
    return directory
