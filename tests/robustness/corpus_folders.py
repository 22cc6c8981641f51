"""Corpus builders of subject folders that hold more than photos: stray non-image files, and a folder copied from
a Mac (AppleDouble ``._*``, ``.DS_Store``) and opened in Jupyter (``.ipynb_checkpoints/``)."""

from __future__ import annotations

from pathlib import Path

from robustness.harness import Env, Invocation, make_subject, masks_run
from robustness.images import photo


def stray_files(env: Env, root: Path) -> Invocation:
    extra = {"notes.txt": b"shot on a phone\n", ".DS_Store": b"\0\1\2", "Thumbs.db": b"\0" * 64}
    subject = make_subject(root, extra)
    (subject / "raw.png").mkdir()  # a folder named like a photo

    def check() -> None:
        written = sorted(p.name for p in (root / "out").glob("*.png"))
        assert written == ["00.png", "01.png", "overlay.png"], written

    return Invocation(masks_run(subject, root / "out"), check=check)


def mac_copy(env: Env, root: Path) -> Invocation:
    """A subject folder copied from a Mac (AppleDouble ``._*`` beside each photo, ``.DS_Store``) that was also
    opened in Jupyter (``.ipynb_checkpoints/``): hidden names are not photos."""
    appledouble = b"\x00\x05\x16\x07\x00\x02\x00\x00Mac OS X        " + bytes(64)
    extra = {"._00.png": appledouble, "._01.png": appledouble, ".DS_Store": b"\x00\x00\x00\x01Bud1" + bytes(32)}
    subject = make_subject(root, extra)
    (subject / ".ipynb_checkpoints").mkdir()
    photo(seed=9).save(subject / ".ipynb_checkpoints" / "00-checkpoint.png")

    def check() -> None:
        written = sorted(p.name for p in (root / "out").glob("*.png"))
        assert written == ["00.png", "01.png", "overlay.png"], written

    return Invocation(masks_run(subject, root / "out"), check=check)
