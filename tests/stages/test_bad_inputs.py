"""Bad and odd inputs (docs/robustness.md): a corpus generated here, run through the stages' CLI.

Each bad input gives exit status 2, one stderr line that names the file and no traceback, and creates no output
folder; each valid odd image (CMYK, 16-bit, palette, grey, RGBA, EXIF-rotated) is handled correctly.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from robustness.images import BAD_PHOTOS, SIDE, jpeg_bytes, write_odd_images
from robustness.images import mask as _mask
from robustness.images import photo as _photo
from support.stage_cli import run_cli

from eqdiff.prep.subjects import load_image


@pytest.fixture(autouse=True)
def _no_project_params(tmp_path, monkeypatch):
    """The CLI reads ./params.yaml by default: run where the project's own cannot leak in."""
    monkeypatch.chdir(tmp_path)


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


def _assert_clean_error(code: int, capsys: pytest.CaptureFixture, names: str, out: Path) -> None:
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == 2, err
    assert "Traceback" not in err
    assert len(lines) == 1 and "error:" in lines[0] and names in lines[0], err
    assert not out.exists()


def _stage_argv(stage: str, subject, out) -> list[str]:
    """``eqdiff augment|bands`` on ``subject`` (masks in its ``masks/``) at 32 px."""
    return [
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


@pytest.mark.parametrize("stage", ["augment", "bands"])
@pytest.mark.parametrize("case", sorted(BAD_PHOTOS))
def test_bad_photo_is_a_one_line_error_naming_the_file(case, stage, tmp_path, capsys):
    name, make = BAD_PHOTOS[case]
    subject = _subject(tmp_path, name, make())
    out = tmp_path / "out"
    argv = _stage_argv(stage, subject, out)
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
    argv = _stage_argv(stage, subject, out)
    _assert_clean_error(run_cli(argv), capsys, named, out)


def test_bad_real_class_image_is_a_one_line_error(tmp_path, capsys):
    real = tmp_path / "real"
    real.mkdir()
    _photo().save(real / "a.png")
    (real / "b.jpg").write_bytes(jpeg_bytes(_photo(size=(64, 64)))[:600])
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


def test_valid_odd_images_load_correctly_and_run_through_the_stages(tmp_path, capsys):
    subject = tmp_path / "odd"
    (subject / "masks").mkdir(parents=True)
    expected = write_odd_images(subject)
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
