"""``index.json`` of a samples folder (docs/architecture.md, "Artefacts and their schemas"): ``eqdiff generate``
writes it (``eqdiff.pipelines.generate``); ``evaluate``, the report's gallery and the world scores read it
(``eqdiff.evaluation.sample_index.read_sample_index``).

A prompt set is any name that is a valid folder name (``eqdiff.io.output_safety.SAFE_NAME``): the paper's
``unstylized`` and ``stylized``, DreamBench's ``live``, or any other. Its images are
``<set>/<prompt:03d>_<sample:02d>.png``, every listed file relative to the samples folder and inside it.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, ClassVar

from eqdiff.io.output_safety import check_name, inside
from eqdiff.io.schemas.fields import Artefact, SchemaError, mapping, required

_IMAGE_FIELDS: dict[str, type] = {
    "file": str,
    "prompt": str,
    "template": str,
    "prompt_set": str,
    "prompt_index": int,
    "sample_index": int,
    "seed": int,
}
_INDEX_FIELDS: dict[str, type] = {
    "subject": str,
    "class_noun": str,
    "placeholder": str,
    "variant": str,
    "calibrated": bool,
}


@dataclass(frozen=True)
class SampleImage:
    """One generated image as ``index.json`` lists it."""

    file: str
    """The PNG, relative to the samples folder: ``<prompt_set>/<prompt_index:03d>_<sample_index:02d>.png``."""
    prompt: str
    """The prompt it was sampled with (the template filled with the placeholder and class noun)."""
    template: str
    """The prompt file's line (``{}`` = the subject slot)."""
    prompt_set: str
    """The prompt set's name (a valid folder name)."""
    prompt_index: int
    """The template's line number in its prompt file, from 0."""
    sample_index: int
    """Which of the ``generate.num_images_per_prompt`` images of that prompt, from 0."""
    seed: int
    """``generate.seed``; with (set, prompt index, sample index) it makes the image's generator."""

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: Any, where: str | Path, at: str) -> SampleImage:
        data = mapping(data, where, at)
        image = cls(**{name: required(data, name, kind, where, at) for name, kind in _IMAGE_FIELDS.items()})
        check_name(image.prompt_set, f"{where}: {at}.prompt_set")
        return image


@dataclass(frozen=True)
class SampleIndex(Artefact):
    """``SAMPLES/index.json``: the subject, its class noun and placeholder, the variant, whether the samples
    come from real weights, and every generated image in generation order."""

    FILE: ClassVar[str] = "index.json"

    directory: Path
    """The samples folder the index lies in (not written: the images' files are relative to it)."""
    subject: str
    class_noun: str
    placeholder: str
    variant: str
    calibrated: bool
    """True when the concept's base model is real SD v1.x weights (a random preset's samples are noise)."""
    images: tuple[SampleImage, ...]

    @property
    def prompt_sets(self) -> tuple[str, ...]:
        """The prompt sets of the images, in the order they were generated."""
        return tuple(dict.fromkeys(image.prompt_set for image in self.images))

    def path(self, image: SampleImage) -> Path:
        return self.directory / image.file

    @property
    def paths(self) -> tuple[Path, ...]:
        """Every image's file, in the order of ``images``."""
        return tuple(self.path(image) for image in self.images)

    def to_json(self) -> dict[str, Any]:
        values = {name: getattr(self, name) for name in _INDEX_FIELDS}
        return {**values, "images": [image.to_json() for image in self.images]}

    @classmethod
    def from_json(cls, data: Any, where: str | Path) -> SampleIndex:
        """``where`` is the index's path: its folder is ``directory``, and every listed file must lie inside it."""
        where = Path(where)
        data = mapping(data, where)
        values = {name: required(data, name, kind, where) for name, kind in _INDEX_FIELDS.items()}
        entries = required(data, "images", list, where)
        if not entries:
            raise SchemaError(f"{where}: lists no images")
        images = tuple(SampleImage.from_json(entry, where, f"images[{i}]") for i, entry in enumerate(entries))
        for i, image in enumerate(images):  # never ../../x.png or /etc/x.png
            inside(where.parent, image.file, f"{where}: images[{i}].file")
        return cls(where.parent, **values, images=images)
