"""What every flow does first: read params (+ ``-S`` overrides) and the pipeline's top-level keys."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from eqdiff.config import apply_cli_overrides, load_params
from tasks.spec import RunLayout, SubjectSpec, read_prompt_sets, read_subject_classes, read_subjects, read_variants


@dataclass(frozen=True)
class Plan:
    """The params of one flow run and what they ask for."""

    params: dict[str, Any]
    subjects: list[SubjectSpec]
    classes: list[str]
    """The class nouns the subjects use, each once."""
    variants: list[str]
    prompt_sets: dict[str, Path]
    layout: RunLayout


def read_plan(params_file: str | Path, overrides: list[str] | None, runs_dir: str | Path) -> Plan:
    """``params_file`` with ``section.key=value`` overrides applied, as ``eqdiff -S`` and ``dvc exp run -S``."""
    params = apply_cli_overrides(load_params(params_file), list(overrides or []))
    subjects = read_subjects(params)
    return Plan(
        params,
        subjects,
        list(read_subject_classes(subjects).values()),
        read_variants(params),
        read_prompt_sets(params),
        RunLayout(Path(runs_dir)),
    )
