"""A samples folder's ``index.json``: ``eqdiff generate`` writes it, ``evaluate`` and ``report`` read it.

``index.json`` holds the subject, class noun, placeholder, variant, whether the weights were real
(``calibrated``) and, per image, its file, prompt, prompt set, prompt and sample indices and seed.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from eqdiff.errors import DataError
from eqdiff.io.artifacts import ArtifactError, read_json
from eqdiff.io.output_safety import OutputError, inside

PROMPT_SETS = ("unstylized", "stylized")
"""The prompt sets evaluated and reported separately (paper Table 1's two row groups)."""


@dataclass(frozen=True)
class SampleImage:
    """One generated image as listed in ``index.json``."""

    path: Path
    prompt: str
    prompt_set: str
    prompt_index: int
    sample_index: int


@dataclass(frozen=True)
class SampleIndex:
    """``SAMPLES/index.json``: the subject, its class noun and placeholder, and every generated image."""

    directory: Path
    subject: str
    class_noun: str
    placeholder: str
    variant: str
    calibrated: bool
    images: tuple[SampleImage, ...]


def read_sample_index(samples_dir: str | Path) -> SampleIndex:
    """Read and validate ``samples_dir/index.json``; a missing key or bad value names the file and field."""
    samples_dir = Path(samples_dir)
    path = samples_dir / "index.json"
    try:
        data = read_json(path)
    except ArtifactError as exc:
        raise DataError(str(exc)) from None
    fields = {
        "subject": str,
        "class_noun": str,
        "placeholder": str,
        "variant": str,
        "calibrated": bool,
        "images": list,
    }
    for key, kind in fields.items():
        if not isinstance(data, dict) or not isinstance(data.get(key), kind):
            raise DataError(f"{path}: field {key!r} missing or not a {kind.__name__}")
    images = []
    for i, entry in enumerate(data["images"]):
        ok = isinstance(entry, dict) and all(isinstance(entry.get(k), str) for k in ("file", "prompt", "prompt_set"))
        ok = ok and all(isinstance(entry.get(k), int) for k in ("prompt_index", "sample_index"))
        if not ok:
            raise DataError(f"{path}: images[{i}] needs file, prompt, prompt_set, prompt_index, sample_index")
        if entry["prompt_set"] not in PROMPT_SETS:
            raise DataError(
                f"{path}: images[{i}].prompt_set is {entry['prompt_set']!r}, expected one of {' | '.join(PROMPT_SETS)}"
            )
        try:  # a listed file must lie inside the samples folder (never ../../x.png or /etc/x.png)
            image_path = inside(samples_dir, entry["file"], f"{path}: images[{i}].file")
        except OutputError as exc:
            raise DataError(str(exc)) from None
        images.append(
            SampleImage(
                image_path,
                entry["prompt"],
                entry["prompt_set"],
                entry["prompt_index"],
                entry["sample_index"],
            )
        )
    if not images:
        raise DataError(f"{path}: lists no images")
    return SampleIndex(
        samples_dir,
        data["subject"],
        data["class_noun"],
        data["placeholder"],
        data["variant"],
        data["calibrated"],
        tuple(images),
    )
