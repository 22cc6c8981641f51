"""The pipeline's top-level params: ``subjects``, ``classes``, ``variants`` and ``prompts`` (see params.yaml).

These keys drive DVC's ``foreach``/``matrix`` and the flows' fan-out; the method sections are read by the
stages themselves. Errors are ``ConfigError`` with one line naming the key.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from eqdiff.config import VARIANTS, ConfigError


@dataclass(frozen=True)
class SubjectSpec:
    """One subject: its name (the runs/<name>/ folder), photo folder and class noun."""

    name: str
    dir: Path
    class_noun: str


def read_subjects(params: dict[str, Any]) -> list[SubjectSpec]:
    """``subjects``: a non-empty list of ``{name, dir, class_noun}`` with unique names."""
    raw = params.get("subjects")
    if not isinstance(raw, list) or not raw:
        raise ConfigError(f"subjects: expected a non-empty list of {{name, dir, class_noun}}, got {raw!r}")
    subjects = []
    for index, entry in enumerate(raw):
        keys = {"name", "dir", "class_noun"}
        if not isinstance(entry, dict) or set(entry) != keys or not all(isinstance(entry[k], str) for k in keys):
            raise ConfigError(f"subjects[{index}]: expected {{name, dir, class_noun}} strings, got {entry!r}")
        if not entry["name"].strip() or "/" in entry["name"] or "\\" in entry["name"] or entry["name"] in (".", ".."):
            raise ConfigError(f"subjects[{index}].name: expected a folder name without '/', got {entry['name']!r}")
        subjects.append(SubjectSpec(entry["name"], Path(entry["dir"]), entry["class_noun"]))
    names = [s.name for s in subjects]
    if len(set(names)) != len(names):
        raise ConfigError(f"subjects: names must be unique, got {names}")
    return subjects


def read_variants(params: dict[str, Any]) -> list[str]:
    """``variants``: ablation presets A-F, default ``[F]``."""
    variants = params.get("variants", ["F"])
    if not isinstance(variants, list) or not variants or any(v not in VARIANTS for v in variants):
        raise ConfigError(f"variants: expected a non-empty list of {' | '.join(VARIANTS)}, got {variants!r}")
    return list(dict.fromkeys(variants))


def read_classes(params: dict[str, Any], subjects: list[SubjectSpec]) -> list[str]:
    """``classes``: each subject's class noun once (one shared prior per class noun)."""
    classes = params.get("classes")
    needed = list(dict.fromkeys(s.class_noun for s in subjects))
    if not isinstance(classes, list) or any(c not in classes for c in needed):
        raise ConfigError(f"classes: expected a list holding every subject's class noun {needed}, got {classes!r}")
    return needed


def read_prompt_sets(params: dict[str, Any]) -> dict[str, Path]:
    """``prompts``: prompt set name -> prompt file (``{}`` = the subject slot)."""
    prompts = params.get("prompts")
    if not isinstance(prompts, dict) or not prompts or not all(isinstance(v, str) for v in prompts.values()):
        raise ConfigError(f"prompts: expected a mapping of set name -> prompt file, got {prompts!r}")
    return {name: Path(path) for name, path in prompts.items()}


@dataclass(frozen=True)
class RunLayout:
    """Where each stage writes under ``runs`` (the layout of dvc.yaml; ``eqdiff report`` reads it)."""

    runs: Path

    def masks(self, subject: str) -> Path:
        return self.runs / subject / "masks"

    def augment(self, subject: str) -> Path:
        return self.runs / subject / "augment"

    def bands(self, subject: str) -> Path:
        return self.runs / subject / "bands"

    def prior(self, class_noun: str) -> Path:
        return self.runs / "prior" / class_noun

    def concept(self, subject: str, variant: str) -> Path:
        return self.runs / subject / variant / "concept"

    def concept_work(self, subject: str, variant: str) -> Path:
        return self.runs / subject / variant / "concept-work"

    def samples(self, subject: str, variant: str) -> Path:
        return self.runs / subject / variant / "samples"

    def metrics(self, subject: str, variant: str) -> Path:
        return self.runs / subject / variant / "metrics.json"


DEMO_SUBJECT_DIR = Path("data/subjects/demo_toy")
"""Where the ``sample`` stage (dvc.yaml) and the flows draw the embedded demo's subject."""
