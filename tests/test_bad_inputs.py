"""Acceptance 5 (DESIGN §6): a corpus of bad and odd inputs, generated here, run through the stages' CLI.

Each bad input gives exit status 2, one stderr line that names the file and no traceback, and creates no output
folder; each valid odd image (CMYK, 16-bit, palette, grey, RGBA, EXIF-rotated) is handled correctly.
"""

from __future__ import annotations

import io
import struct
import zlib
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from stage_cli import run_cli

from eqdiff.data import load_image

SIDE = (48, 40)


def _photo(mode: str = "RGB", size: tuple[int, int] = SIDE) -> Image.Image:
    rng = np.random.default_rng(0)
    return Image.fromarray(rng.integers(0, 255, (size[1], size[0], 3), dtype=np.uint8), "RGB").convert(mode)


def _mask(size: tuple[int, int] = SIDE) -> Image.Image:
    mask = Image.new("L", size, 0)
    mask.paste(255, (size[0] // 4, size[1] // 4, size[0] * 3 // 4, size[1] * 3 // 4))
    return mask


def _png_header_only(width: int, height: int) -> bytes:
    """A PNG whose IHDR claims width x height (a decompression bomb's header), with no pixel data."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    chunk = b"IHDR" + ihdr
    return b"\x89PNG\r\n\x1a\n" + struct.pack(">I", len(ihdr)) + chunk + struct.pack(">I", zlib.crc32(chunk))


def _jpeg_bytes(image: Image.Image, **kwargs) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=90, **kwargs)
    return buffer.getvalue()


def _subject(root: Path, bad_name: str | None = None, bad_bytes: bytes | None = None, photos: int = 2) -> Path:
    subject = root / "subject"
    (subject / "masks").mkdir(parents=True)
    for i in range(photos):
        _photo().save(subject / f"{i:02d}.png")
        _mask().save(subject / "masks" / f"{i:02d}.png")
    if bad_name is not None:
        (subject / bad_name).write_bytes(bad_bytes)
        _mask().save(subject / "masks" / f"{Path(bad_name).stem}.png")
    return subject


BAD_PHOTOS: dict[str, tuple[str, Callable[[], bytes]]] = {
    "zero-byte": ("zz.jpg", lambda: b""),
    "truncated-jpeg": ("zz.jpg", lambda: _jpeg_bytes(_photo(size=(64, 64)))[:600]),
    "text-named-jpg": ("zz.jpg", lambda: b"this is not an image\n" * 20),
    "decompression-bomb": ("zz.png", lambda: _png_header_only(30000, 30000)),
    "one-pixel": ("zz.png", lambda: _png_bytes(_photo(size=(1, 1)))),
}


def _png_bytes(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def _assert_clean_error(code: int, capsys: pytest.CaptureFixture, names: str, out: Path) -> None:
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == 2, err
    assert "Traceback" not in err
    assert len(lines) == 1 and "error:" in lines[0] and names in lines[0], err
    assert not out.exists()


@pytest.mark.parametrize("stage", ["augment", "bands"])
@pytest.mark.parametrize("case", sorted(BAD_PHOTOS))
def test_bad_photo_is_a_one_line_error_naming_the_file(case, stage, tmp_path, capsys):
    name, make = BAD_PHOTOS[case]
    subject = _subject(tmp_path, name, make())
    out = tmp_path / "out"
    argv = [
        stage,
        "--subject-dir",
        str(subject),
        "--masks",
        str(subject / "masks"),
        "--out",
        str(out),
        "-S",
        "train.resolution=32",
    ]
    _assert_clean_error(run_cli(argv), capsys, name, out)


@pytest.mark.parametrize("stage", ["augment", "bands"])
@pytest.mark.parametrize("case", ["wrong-size-mask", "missing-mask", "empty-mask", "one-photo"])
def test_bad_subject_is_a_one_line_error_naming_the_file(case, stage, tmp_path, capsys):
    subject = _subject(tmp_path, photos=1 if case == "one-photo" else 2)
    named = "subject"
    if case == "wrong-size-mask":
        _mask((SIDE[0] + 1, SIDE[1])).save(subject / "masks" / "01.png")
        named = "01.png"
    elif case == "missing-mask":
        (subject / "masks" / "01.png").unlink()
        named = "01.png"
    elif case == "empty-mask":
        Image.new("L", SIDE, 0).save(subject / "masks" / "01.png")
        named = "01.png"
    out = tmp_path / "out"
    argv = [
        stage,
        "--subject-dir",
        str(subject),
        "--masks",
        str(subject / "masks"),
        "--out",
        str(out),
        "-S",
        "train.resolution=32",
    ]
    _assert_clean_error(run_cli(argv), capsys, named, out)


def test_bad_real_class_image_is_a_one_line_error(tmp_path, capsys):
    real = tmp_path / "real"
    real.mkdir()
    _photo().save(real / "a.png")
    (real / "b.jpg").write_bytes(_jpeg_bytes(_photo(size=(64, 64)))[:600])
    out = tmp_path / "out"
    argv = [
        "prior",
        "--class-noun",
        "toy",
        "--out",
        str(out),
        "-S",
        f"prior.real_images_dir={real}",
        "-S",
        "train.num_class_images=2",
    ]
    _assert_clean_error(run_cli(argv), capsys, "b.jpg", out)


def _odd_images(directory: Path) -> dict[str, Image.Image]:
    """Write the valid odd photos; return what each must look like after loading (RGB, display orientation)."""
    base = _photo()
    expected = {}
    (directory / "cmyk.jpg").write_bytes(_jpeg_bytes(base.convert("CMYK")))
    expected["cmyk"] = None  # lossy: checked for mode and size only
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
    # EXIF orientation 6: the stored pixels are shown rotated 90 degrees clockwise (display size 40 x 48).
    stored = Image.new("RGB", SIDE, (0, 0, 255))
    stored.paste((255, 0, 0), (0, 0, SIDE[0] // 2, SIDE[1]))  # left half red
    exif = Image.Exif()
    exif[0x0112] = 6
    (directory / "rotated.jpg").write_bytes(_jpeg_bytes(stored, exif=exif.tobytes()))
    expected["rotated"] = None
    return expected


def test_valid_odd_images_load_correctly_and_run_through_the_stages(tmp_path, capsys):
    subject = tmp_path / "odd"
    (subject / "masks").mkdir(parents=True)
    expected = _odd_images(subject)
    for stem, image in expected.items():
        path = next(subject.glob(f"{stem}.*"))
        loaded = load_image(path)
        assert loaded.mode == "RGB"
        if image is not None:
            assert np.abs(np.asarray(loaded, dtype=int) - np.asarray(image, dtype=int)).max() <= 1, stem
        _mask(loaded.size).save(subject / "masks" / f"{stem}.png")
    rotated = np.asarray(load_image(subject / "rotated.jpg"), dtype=int)
    assert rotated.shape[:2] == (SIDE[0], SIDE[1])  # (H, W) = (48, 40): width and height swapped
    assert rotated[2, 20, 0] > 200 and rotated[2, 20, 2] < 60  # top is red: the left half turned clockwise
    assert rotated[-3, 20, 2] > 200 and rotated[-3, 20, 0] < 60
    for stage in ("augment", "bands"):
        argv = [
            stage,
            "--subject-dir",
            str(subject),
            "--masks",
            str(subject / "masks"),
            "--out",
            str(tmp_path / stage),
            "-S",
            "train.resolution=32",
        ]
        assert run_cli(argv) == 0, capsys.readouterr().err
    assert len(list((tmp_path / "augment" / "views").iterdir())) == 4 * len(expected)
