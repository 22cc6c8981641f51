"""Generators of bad and odd image files, shared by the corpus and ``tests/stages/test_bad_inputs.py``
(docs/robustness.md).

Every generator is seeded: the same call gives the same bytes, so a failing case reproduces.
"""

from __future__ import annotations

import io
import struct
import zlib
from collections.abc import Callable
from pathlib import Path

import numpy as np
from PIL import Image

SIDE = (48, 40)
"""(width, height) of the ordinary photos of a generated subject: not square, so orientation shows."""


def photo(mode: str = "RGB", size: tuple[int, int] = SIDE, seed: int = 0) -> Image.Image:
    """Seeded uniform noise of ``size`` (width, height), converted to ``mode``."""
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 255, (size[1], size[0], 3), dtype=np.uint8), "RGB").convert(mode)


def mask(size: tuple[int, int] = SIDE) -> Image.Image:
    """A binary (0/255, mode L) mask with the central half of each side as foreground."""
    image = Image.new("L", size, 0)
    image.paste(255, (size[0] // 4, size[1] // 4, size[0] * 3 // 4, size[1] * 3 // 4))
    return image


def png_header_only(width: int, height: int) -> bytes:
    """A PNG whose IHDR claims width x height (a decompression bomb's header), with no pixel data."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    chunk = b"IHDR" + ihdr
    return b"\x89PNG\r\n\x1a\n" + struct.pack(">I", len(ihdr)) + chunk + struct.pack(">I", zlib.crc32(chunk))


def jpeg_bytes(image: Image.Image, **kwargs) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=90, **kwargs)
    return buffer.getvalue()


def png_bytes(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


BAD_PHOTOS: dict[str, tuple[str, Callable[[], bytes]]] = {
    "zero-byte": ("zz.jpg", lambda: b""),
    "truncated-jpeg": ("zz.jpg", lambda: jpeg_bytes(photo(size=(64, 64)))[:600]),
    "text-named-jpg": ("zz.jpg", lambda: b"this is not an image\n" * 20),
    "decompression-bomb": ("zz.png", lambda: png_header_only(30000, 30000)),
    "one-pixel": ("zz.png", lambda: png_bytes(photo(size=(1, 1)))),
    "10000x10-strip": ("zz.png", lambda: png_bytes(photo(size=(10000, 10)))),
}
"""Bad photo kind -> (file name, bytes): each must be refused with a one-line error naming the file."""


def exif_rotated_jpeg() -> bytes:
    """A 48x40 JPEG stored left-half red, right-half blue, with EXIF orientation 6 (shown rotated 90° clockwise:
    40x48, red on top)."""
    stored = Image.new("RGB", SIDE, (0, 0, 255))
    stored.paste((255, 0, 0), (0, 0, SIDE[0] // 2, SIDE[1]))
    exif = Image.Exif()
    exif[0x0112] = 6
    return jpeg_bytes(stored, exif=exif.tobytes())


def rgba_with_hole() -> Image.Image:
    """The base photo as RGBA, fully transparent in its left quarter (which must come back white)."""
    rgba = photo().convert("RGBA")
    alpha = Image.new("L", SIDE, 255)
    alpha.paste(0, (0, 0, SIDE[0] // 4, SIDE[1]))
    rgba.putalpha(alpha)
    return rgba


def write_odd_images(directory: Path) -> dict[str, Image.Image | None]:
    """Write the valid odd photos; return what each must look like after loading (RGB, display orientation).

    ``None`` means lossy (CMYK JPEG) or checked separately (EXIF rotation).
    """
    base = photo()
    expected: dict[str, Image.Image | None] = {}
    (directory / "cmyk.jpg").write_bytes(jpeg_bytes(base.convert("CMYK")))
    expected["cmyk"] = None
    grey16 = (np.asarray(base.convert("L"), dtype=np.uint16) * 257).astype(np.uint16)
    Image.fromarray(grey16).save(directory / "grey16.png")  # 16-bit PNG, full 16-bit range
    expected["grey16"] = base.convert("L").convert("RGB")
    base.convert("P", palette=Image.Palette.ADAPTIVE).save(directory / "palette.png")
    expected["palette"] = base.convert("P", palette=Image.Palette.ADAPTIVE).convert("RGB")
    base.convert("L").save(directory / "grey.png")
    expected["grey"] = base.convert("L").convert("RGB")
    rgba = base.convert("RGBA")
    rgba.putalpha(255)
    rgba.save(directory / "rgba.png")
    expected["rgba"] = base
    (directory / "rotated.jpg").write_bytes(exif_rotated_jpeg())
    expected["rotated"] = None
    return expected
