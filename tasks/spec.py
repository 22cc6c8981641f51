"""The pipeline's top-level params: ``subjects``, ``classes``, ``variants`` and ``prompts`` (see params.yaml).

``classes`` maps each class's slug to its noun (``eqdiff.prep.classes``); a subject names its class by slug.

These keys drive DVC's ``foreach``/``matrix`` and the flows' fan-out; the method sections are read by the
stages themselves. Errors are ``ConfigError`` with one line naming the key.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from eqdiff.config import VARIANTS, ConfigError
from eqdiff.prep.classes import class_slug
from eqdiff.stages.arguments import read_classes

# What DVC may paste unquoted into a shell command: dvc.yaml interpolates names and paths into its cmds.
_COMMAND_SAFE = re.compile(r"[A-Za-z0-9_.+/-]+")


@dataclass(frozen=True)
class SubjectSpec:
    """One subject: its name (the runs/<name>/ folder), photo folder and class (noun and its slug)."""

    name: str
    dir: Path
    class_noun: str
    class_slug: str


def _check_command_safe(where: str, value: str, what: str) -> None:
    if not _COMMAND_SAFE.fullmatch(value) or value.startswith("-"):
        raise ConfigError(f"{where}: expected {what} of letters, digits and . _ + - / only, got {value!r}")


def read_subjects(params: dict[str, Any]) -> list[SubjectSpec]:
    """``subjects``: a non-empty list of ``{name, dir, class}`` with unique names, ``class`` a key of ``classes``."""
    raw = params.get("subjects")
    if not isinstance(raw, list) or not raw:
        raise ConfigError(f"subjects: expected a non-empty list of {{name, dir, class}}, got {raw!r}")
    classes = read_classes(params)
    subjects = []
    for index, entry in enumerate(raw):
        if isinstance(entry, dict) and "class_noun" in entry:
            noun = entry["class_noun"]
            raise ConfigError(
                f"subjects[{index}]: class nouns are listed once under classes; write class: {class_slug(str(noun))} "
                f"and classes: {{{class_slug(str(noun))}: {noun}}}"
            )
        keys = {"name", "dir", "class"}
        if not isinstance(entry, dict) or set(entry) != keys or not all(isinstance(entry[k], str) for k in keys):
            raise ConfigError(f"subjects[{index}]: expected {{name, dir, class}} strings, got {entry!r}")
        _check_command_safe(f"subjects[{index}].name", entry["name"], "a folder name")
        if not entry["name"].strip() or "/" in entry["name"] or "\\" in entry["name"] or entry["name"] in (".", ".."):
            raise ConfigError(f"subjects[{index}].name: expected a folder name without '/', got {entry['name']!r}")
        _check_command_safe(f"subjects[{index}].dir", entry["dir"], "a path")
        if entry["class"] not in classes:
            raise ConfigError(
                f"subjects[{index}].class: expected a key of classes {sorted(classes)}, got {entry['class']!r}"
            )
        subjects.append(SubjectSpec(entry["name"], Path(entry["dir"]), classes[entry["class"]], entry["class"]))
    names = [s.name for s in subjects]
    if len(set(names)) != len(names):
        raise ConfigError(f"subjects: names must be unique, got {names}")
    return subjects


def read_variants(params: dict[str, Any]) -> list[str]:
    """``variants``: ablation presets (``config.VARIANTS``: A-F and the leave-one-out ones), default ``[F]``."""
    variants = params.get("variants", ["F"])
    if not isinstance(variants, list) or not variants or any(v not in VARIANTS for v in variants):
        raise ConfigError(f"variants: expected a non-empty list of {' | '.join(VARIANTS)}, got {variants!r}")
    return list(dict.fromkeys(variants))


def read_subject_classes(subjects: list[SubjectSpec]) -> dict[str, str]:
    """The classes the subjects use, slug -> noun, each once (one shared prior per class)."""
    return {s.class_slug: s.class_noun for s in subjects}


def read_prompt_sets(params: dict[str, Any]) -> dict[str, Path]:
    """``prompts``: prompt set name -> prompt file (``{}`` = the subject slot)."""
    prompts = params.get("prompts")
    if not isinstance(prompts, dict) or not prompts or not all(isinstance(v, str) for v in prompts.values()):
        raise ConfigError(f"prompts: expected a mapping of set name -> prompt file, got {prompts!r}")
    for name, path in prompts.items():
        _check_command_safe(f"prompts.{name}", path, "a path")
    return {name: Path(path) for name, path in prompts.items()}


DEMO_SUBJECT_DIR = Path("data/subjects/demo_ball")
"""Where the ``sample`` stage (dvc.yaml) and the flows draw the embedded demo's subject."""
DEMO_SUBJECT = {"num_photos": 5, "seed": 0, "world": "ball", "photo_style": "watercolor"}
"""The ``sample`` stage's arguments for it (dvc.yaml's ``eqdiff sample`` command): the held-out world ball, its photos
all watercolors (a styled subject set, docs/world.md)."""
