"""The manifests of the cached stages (docs/architecture.md, "Artefacts and their schemas"; docs/robustness.md):
``masks.json`` (``eqdiff.prep.masks``), ``augment.json`` (``eqdiff.prep.augment``), ``bands.json``
(``eqdiff.prep.bands``) and ``prior.json`` (``eqdiff.prep.prior``).

Each records a ``key``, what its outputs were made from (input digests, options, model fingerprint): a re-run
with the same key rewrites nothing (``eqdiff.io.manifests.is_up_to_date``), and train refuses a cache whose
``key.inputs`` are not the photos and masks it trains on (``eqdiff.io.manifests.check_cache_inputs``). The key
is read as a plain JSON mapping: it is compared whole, never interpreted field by field.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

from eqdiff.io.schemas.fields import NUMBER, Artefact, mapping, optional, required, strings


class StageManifest(Artefact):
    """A cached stage's manifest: ``STAGE`` made it, ``key`` is what its outputs were made from."""

    STAGE: ClassVar[str]
    key: dict[str, Any]


@dataclass(frozen=True)
class MaskRecord:
    """One photo's entry in ``masks.json``."""

    photo: str
    """The photo's file name."""
    foreground_fraction: float
    """The fraction of the photo's pixels in the mask, rounded to 6 decimals."""
    backend: str
    threshold: float
    """The saliency (or mask) level the mask was thresholded at."""
    details: dict[str, Any]
    """What the backend adds (u2netp: ``refined`` and what refinement changed; grounded-sam: the box and its
    score), written between ``threshold`` and ``checks``."""
    checks: tuple[str, ...]
    """The self-checks' findings for this photo (``eqdiff.prep.mask_checks``)."""

    def to_json(self) -> dict[str, Any]:
        head = {"photo": self.photo, "foreground_fraction": self.foreground_fraction, "backend": self.backend}
        return {**head, "threshold": self.threshold, **self.details, "checks": list(self.checks)}

    @classmethod
    def from_json(cls, data: Any, where: str | Path, at: str) -> MaskRecord:
        data = mapping(data, where, at)
        known = {"photo": str, "foreground_fraction": NUMBER, "backend": str, "threshold": NUMBER}
        values = {name: required(data, name, kind, where, at) for name, kind in known.items()}
        details = {k: v for k, v in data.items() if k not in known and k != "checks"}
        return cls(**values, details=details, checks=strings(data, "checks", where, at))


@dataclass(frozen=True)
class MasksManifest(StageManifest):
    """``masks.json``: the subject, its class noun, one record per photo stem, every warning, and the key."""

    FILE: ClassVar[str] = "masks.json"
    STAGE: ClassVar[str] = "masks"

    subject: str
    class_noun: str
    photos: dict[str, MaskRecord]
    warnings: tuple[str, ...]
    """Every self-check finding, one line each (the gallery shows them)."""
    key: dict[str, Any]

    def to_json(self) -> dict[str, Any]:
        photos = {stem: record.to_json() for stem, record in self.photos.items()}
        head = {"subject": self.subject, "class_noun": self.class_noun, "photos": photos}
        return {**head, "warnings": list(self.warnings), "key": self.key}

    @classmethod
    def from_json(cls, data: Any, where: str | Path) -> MasksManifest:
        data = mapping(data, where)
        photos = {
            stem: MaskRecord.from_json(record, where, f"photos.{stem}")
            for stem, record in required(data, "photos", dict, where).items()
        }
        return cls(
            required(data, "subject", str, where),
            required(data, "class_noun", str, where),
            photos,
            strings(data, "warnings", where),
            required(data, "key", dict, where),
        )


@dataclass(frozen=True)
class AugmentManifest(StageManifest):
    """``augment.json``: the key and, per photo stem, its views' file names (in ``views/`` and ``masks/``)."""

    FILE: ClassVar[str] = "augment.json"
    STAGE: ClassVar[str] = "augment"

    key: dict[str, Any]
    views: dict[str, tuple[str, ...]]

    def to_json(self) -> dict[str, Any]:
        return {"key": self.key, "views": {stem: list(names) for stem, names in self.views.items()}}

    @classmethod
    def from_json(cls, data: Any, where: str | Path) -> AugmentManifest:
        data = mapping(data, where)
        views = required(data, "views", dict, where)
        return cls(required(data, "key", dict, where), {stem: strings(views, stem, where, "views") for stem in views})


@dataclass(frozen=True)
class BandsManifest(StageManifest):
    """``bands.json``: the key, the photo stems in the tensors' row order, the resolution, the resize mode, the
    band options and the base model's fingerprint (``eqdiff.prep.bands``)."""

    FILE: ClassVar[str] = "bands.json"
    STAGE: ClassVar[str] = "bands"

    key: dict[str, Any]
    stems: tuple[str, ...]
    resolution: int
    resize: str
    """``train.resize``'s value; a cache written before that option existed was cropped (read as ``crop``)."""
    band_options: dict[str, Any]
    fingerprint: str

    def to_json(self) -> dict[str, Any]:
        head = {"key": self.key, "stems": list(self.stems), "resolution": self.resolution, "resize": self.resize}
        return {**head, "band_options": self.band_options, "fingerprint": self.fingerprint}

    @classmethod
    def from_json(cls, data: Any, where: str | Path) -> BandsManifest:
        data = mapping(data, where)
        return cls(
            required(data, "key", dict, where),
            strings(data, "stems", where),
            required(data, "resolution", int, where),
            optional(data, "resize", str, where) or "crop",
            required(data, "band_options", dict, where),
            required(data, "fingerprint", str, where),
        )


@dataclass(frozen=True)
class PriorManifest(StageManifest):
    """``prior.json``: the key and the class images' file names; copied real images also list their sources."""

    FILE: ClassVar[str] = "prior.json"
    STAGE: ClassVar[str] = "prior"

    key: dict[str, Any]
    images: tuple[str, ...]
    """The class images made so far, in order (empty while a generation run has made none)."""
    sources: tuple[str, ...] | None = None
    """``prior.real_images_dir`` mode: the file each image was copied from."""

    def to_json(self) -> dict[str, Any]:
        values = {"key": self.key, "images": list(self.images)}
        return values if self.sources is None else {**values, "sources": list(self.sources)}

    @classmethod
    def from_json(cls, data: Any, where: str | Path) -> PriorManifest:
        data = mapping(data, where)
        sources = strings(data, "sources", where) if "sources" in data else None
        return cls(required(data, "key", dict, where), strings(data, "images", where), sources)
