"""``concept.json``, the manifest of a concept directory (docs/architecture.md, "Artefacts and their schemas";
docs/method.md, Inference): training writes it (``eqdiff.training.recipe``, through
``eqdiff.models.concept.save_concept``); ``load_concept``, ``eqdiff generate`` and train's resume check read it.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

from eqdiff.config import ConfigError, ModelConfig, RraConfig
from eqdiff.io.schemas.fields import Artefact, SchemaError, optional, required, without_none

FORMAT = "eqdiff-concept/1"
"""``concept.json``'s ``format`` (and the safetensors file's ``format`` metadata)."""
_REQUIRED: dict[str, type] = {
    "base_model": str,
    "base_model_fingerprint": str,
    "placeholder": str,
    "initializer_token": str,
    "class_noun": str,
    "variant": str,
    "rra": bool,
    "resolution": int,
    "config": dict,
}
"""What inference reads, with its type."""
_OPTIONAL: dict[str, type] = {
    "subject": str,
    "instance_prompt": str,
    "class_prompt": str,
    "steps": int,
    "run_key": str,
}
"""What training records besides (a concept made another way may leave them out)."""
_ORDER = (
    "subject",
    "base_model",
    "base_model_fingerprint",
    "placeholder",
    "initializer_token",
    "class_noun",
    "instance_prompt",
    "class_prompt",
    "resolution",
    "rra",
    "variant",
    "steps",
    "run_key",
    "config",
)
"""The order training has always written the fields in, after ``format``."""


@dataclass(frozen=True)
class ConceptManifest(Artefact):
    """``concept.json``: the base model's identity and fingerprint, the placeholder, class noun and prompts,
    and the resolved config of the run (every method section but ``generate``)."""

    FILE: ClassVar[str] = "concept.json"

    base_model: str
    base_model_fingerprint: str
    """``Components.fingerprint`` of the base model: loading refuses a concept on another one."""
    placeholder: str
    initializer_token: str
    class_noun: str
    variant: str
    rra: bool
    """Whether the concept holds RRA processors (else Custom Diffusion's)."""
    resolution: int
    """The training resolution in px, a positive multiple of 8: inference samples at it."""
    config: dict[str, Any]
    """The resolved method config by section; ``model`` and ``rra`` must be valid sections."""
    subject: str | None = None
    instance_prompt: str | None = None
    """The training prompt template; inference's default reference prompt derives from it."""
    class_prompt: str | None = None
    steps: int | None = None
    """The training steps done when it was saved."""
    run_key: str | None = None
    """The identity of the optimisation (``EqDiffRecipe.run_key``): a finished run is not trained again."""

    def to_json(self) -> dict[str, Any]:
        return {"format": FORMAT, **without_none({name: getattr(self, name) for name in _ORDER})}

    @classmethod
    def from_json(cls, data: Any, where: str | Path) -> ConceptManifest:
        if not isinstance(data, dict) or data.get("format") != FORMAT:
            raise SchemaError(f"{where}: not an EqDiff concept manifest (format {FORMAT})")
        values = {name: required(data, name, kind, where) for name, kind in _REQUIRED.items()}
        values |= {name: optional(data, name, kind, where) for name, kind in _OPTIONAL.items()}
        if values["resolution"] <= 0 or values["resolution"] % 8:
            raise SchemaError(f"{where}: resolution {values['resolution']} is not a positive multiple of 8")
        for name, section in (("model", ModelConfig), ("rra", RraConfig)):
            try:
                section.from_mapping(values["config"].get(name))
            except ConfigError as exc:
                raise SchemaError(f"{where}: config.{exc}") from None
        return cls(**values)
