"""``metrics.json`` and its sidecar ``evaluation.json`` (docs/architecture.md, "Artefacts and their schemas";
docs/method.md, Evaluation): ``eqdiff evaluate`` writes both (``eqdiff.evaluation.evaluate.split_metrics``); the
report (``eqdiff.evaluation.records``) and MLflow tracking (``tasks/tracking.py``) read them.

``metrics.json`` holds numbers only (what ``dvc metrics`` tabulates): ``n_real_images`` and one block per prompt
set, whatever its name. ``evaluation.json`` holds what was measured: the calibration flags, the metric models,
the subject folder, per-prompt CLIP-T and, with ``evaluate.world``, the world evaluators' record.
"""

from __future__ import annotations

from dataclasses import MISSING, asdict, dataclass, fields
from pathlib import Path
from typing import Any, ClassVar

from eqdiff.io.output_safety import check_name
from eqdiff.io.schemas.fields import NUMBER, Artefact, SchemaError, mapping, optional, required, without_none


@dataclass(frozen=True)
class SetMetrics:
    """One prompt set's block of ``metrics.json`` (docs/method.md, Evaluation)."""

    clip_t: float
    """Mean ``2.5 * max(cos(image, text), 0)`` (CLIPScore, w = 2.5)."""
    clip_t_cosine: float
    """Mean raw image-text cosine."""
    clip_i: float
    """Mean CLIP cosine over all (generated, real) pairs."""
    dino_i: float
    """Mean DINO cosine over all (generated, real) pairs."""
    n_images: int
    n_prompts: int
    world_text: float | None = None
    """With ``evaluate.world``: the fraction of images whose recognised scene and style are the prompt's."""
    world_identity: float | None = None
    """With ``evaluate.world``: the mean identity-embedding cosine over all (generated, real) pairs."""
    world_identity_match: float | None = None
    """With ``evaluate.world``: the fraction of images whose identity attributes all match the real photos'."""
    style_leak: float | None = None
    """With ``evaluate.world``: of the images asked for a style other than the photos', the share drawn in the
    photos' style (absent when no prompt of the set asks for another style)."""
    scene_leak: float | None = None
    """With ``evaluate.world``: the same for the scene, over the prompts that name another scene."""

    def to_json(self) -> dict[str, Any]:
        return without_none(asdict(self))

    @classmethod
    def from_json(cls, data: Any, where: str | Path, at: str) -> SetMetrics:
        data = mapping(data, where, at)
        values = {}
        for spec in fields(cls):
            read = required if spec.default is MISSING else optional
            values[spec.name] = read(data, spec.name, int if spec.name.startswith("n_") else NUMBER, where, at)
        return cls(**values)


@dataclass(frozen=True)
class MetricsRecord(Artefact):
    """``metrics.json``: the number of real photos and, per prompt set (in the order evaluated), its metrics."""

    FILE: ClassVar[str] = "metrics.json"

    n_real_images: int
    sets: dict[str, SetMetrics]
    """Prompt set -> its block; written at the top level beside ``n_real_images``."""

    def __post_init__(self) -> None:
        assert "n_real_images" not in self.sets, "a prompt set named like a metrics.json field"

    def to_json(self) -> dict[str, Any]:
        return {"n_real_images": self.n_real_images, **{name: block.to_json() for name, block in self.sets.items()}}

    @classmethod
    def from_json(cls, data: Any, where: str | Path) -> MetricsRecord:
        data = mapping(data, where)
        n_real_images = required(data, "n_real_images", int, where)
        sets = {}
        for name, block in data.items():
            if name != "n_real_images":
                sets[check_name(name, f"{where}: prompt set")] = SetMetrics.from_json(block, where, name)
        if not sets:
            raise SchemaError(f"{where}: has no prompt-set block (re-run `eqdiff evaluate`)")
        return cls(n_real_images, sets)


@dataclass(frozen=True)
class PromptScore:
    """CLIP-T of one prompt (``evaluation.json``'s ``per_prompt``)."""

    prompt_index: int
    prompt: str
    text: str
    """The CLIP-T text: the prompt without the placeholder."""
    clip_t: float
    n_images: int

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: Any, where: str | Path, at: str) -> PromptScore:
        data = mapping(data, where, at)
        kinds = {"prompt_index": int, "prompt": str, "text": str, "clip_t": NUMBER, "n_images": int}
        return cls(**{name: required(data, name, kind, where, at) for name, kind in kinds.items()})


_FLAGS = {
    "calibrated": bool,
    "metric_models_calibrated": bool,
    "samples_calibrated": bool,
    "clip_model": str,
    "dino_model": str,
    "subject": str,
    "variant": str,
    "subject_dir": str,
}


@dataclass(frozen=True)
class EvaluationRecord(Artefact):
    """``evaluation.json``: what ``metrics.json`` measured."""

    FILE: ClassVar[str] = "evaluation.json"

    calibrated: bool
    """Both metric models have real weights and the samples come from real weights: the numbers mean something."""
    metric_models_calibrated: bool
    samples_calibrated: bool
    clip_model: str
    """The CLIP model's directory, or ``random-init:...`` without weights."""
    dino_model: str
    subject: str
    variant: str
    subject_dir: str
    """The subject's photo folder as given to ``eqdiff evaluate`` (the report reads the photos from it)."""
    per_prompt: dict[str, tuple[PromptScore, ...]]
    """Prompt set -> CLIP-T per prompt, by prompt index."""
    world_evaluator: dict[str, Any] | None = None
    """With ``evaluate.world``: the world evaluators' ``weights``, ``sha256``, measured ``accuracy``, the real
    photos' majority identity, style and scene, and ``images``: each generated image's reading (its file, prompt
    set and index, the prompt's targets, each head's label and probabilities; ``eqdiff.world.scores``)."""

    def to_json(self) -> dict[str, Any]:
        per_prompt = {name: [score.to_json() for score in scores] for name, scores in self.per_prompt.items()}
        values = {name: getattr(self, name) for name in _FLAGS}
        return without_none({**values, "per_prompt": per_prompt, "world_evaluator": self.world_evaluator})

    @classmethod
    def from_json(cls, data: Any, where: str | Path) -> EvaluationRecord:
        data = mapping(data, where)
        values = {name: required(data, name, kind, where) for name, kind in _FLAGS.items()}
        per_prompt = {}
        for name, scores in required(data, "per_prompt", dict, where).items():
            if not isinstance(scores, list):
                raise SchemaError(f"{where}: per_prompt.{name} is not a list")
            at = f"per_prompt.{name}"
            per_prompt[name] = tuple(PromptScore.from_json(s, where, f"{at}[{i}]") for i, s in enumerate(scores))
        evaluator = optional(data, "world_evaluator", dict, where)
        if evaluator is not None:
            for name, kind in (("weights", str), ("sha256", str), ("accuracy", dict)):
                required(evaluator, name, kind, where, "world_evaluator")
            optional(evaluator, "images", list, where, "world_evaluator")
        return cls(**values, per_prompt=per_prompt, world_evaluator=evaluator)


EVALUATION_FIELDS = tuple(spec.name for spec in fields(EvaluationRecord))
"""The top-level fields of ``evaluation.json``."""
RESERVED_SET_NAMES = frozenset({"n_real_images", *EVALUATION_FIELDS})
"""Names no prompt set may take: ``eqdiff evaluate`` returns both files' fields beside the prompt-set blocks in one
mapping (``eqdiff.evaluation.evaluate.evaluate``), and ``metrics.json`` holds the blocks beside ``n_real_images``."""


def check_prompt_set(name: Any, what: str) -> str:
    """``name`` when it can name a prompt set: a valid folder name that is not a field of these two files."""
    check_name(name, what)
    if name in RESERVED_SET_NAMES:
        raise SchemaError(f"{what} {name!r}: the name of a field of metrics.json or evaluation.json; choose another")
    return name
