"""The data the tracking stage logs, read from the run folders (tasks/tracking.py logs it to MLflow): the params
flattened per variant, the losses of ``losses.jsonl``, the final metrics, and what a parent run carries."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from eqdiff.config import AugmentConfig, EvaluateConfig, MasksConfig, MethodConfig, PriorConfig, section_to_dict
from eqdiff.errors import EqDiffError
from eqdiff.evaluation.records import METRICS
from eqdiff.io.schemas.evaluation import MetricsRecord


def flatten_params(params: dict[str, Any], variant: str) -> dict[str, str]:
    """Every config section as ``section.key`` -> string, the method sections with ``variant`` applied."""
    method_params = {**params, "train": {**(params.get("train") or {}), "variant": variant}}
    sections = MethodConfig.from_dict(method_params).resolved().to_dict()
    for cls in (MasksConfig, AugmentConfig, PriorConfig, EvaluateConfig):
        sections[cls.SECTION] = section_to_dict(cls.from_mapping(params.get(cls.SECTION)))
    return {f"{name}.{key}": _param_value(value) for name, values in sections.items() for key, value in values.items()}


def _param_value(value: Any) -> str:
    return json.dumps(list(value)) if isinstance(value, tuple) else str(value)


def read_losses(path: Path) -> list[tuple[int, float | None, dict[str, float]]]:
    """``(step, wall time in s or None, {"loss/total": ...})`` rows of a ``losses.jsonl`` (missing file: none;
    a log written before records carried ``time``: None).

    A line that is not ``{"step": int, name: number, ...}`` (a killed run's half-written last line) is an
    ``EqDiffError`` naming ``path:line``; re-running ``eqdiff train`` resumes and trims it.
    """
    if not path.is_file():
        return []
    rows = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
            step, wall_time = record.pop("step"), record.pop("time", None)
            if not isinstance(step, int) or isinstance(step, bool) or step < 0:
                raise ValueError(step)
            if wall_time is not None and not isinstance(wall_time, int | float):
                raise ValueError(wall_time)
            rows.append((step, wall_time, {k: float(v) for k, v in record.items()}))
        except (ValueError, TypeError, AttributeError, KeyError):
            raise EqDiffError(
                f"{path}:{number}: not a loss record (half-written by a killed run? re-run `eqdiff train`)"
            ) from None
    return rows


def final_metrics(metrics: MetricsRecord) -> dict[str, float]:
    """``{"unstylized/clip_t": ..., "stylized/dino_i": ..., "live/clip_t": ...}``: the paper's metrics of every
    prompt set of an ``eqdiff evaluate`` metrics file."""
    return {
        f"{prompt_set}/{name}": float(getattr(block, name))
        for prompt_set, block in metrics.sets.items()
        for name in METRICS
    }


def common_params(per_run: list[dict[str, str]]) -> dict[str, str]:
    """The params every nested run shares (what the parent run carries; variant-dependent ones differ)."""
    first, *others = per_run
    return {key: value for key, value in first.items() if all(other.get(key) == value for other in others)}


def averaged_metrics(per_run: dict[tuple[str, str], dict[str, float]]) -> dict[str, float]:
    """Per variant, each final metric averaged over subjects: ``{"F/unstylized/clip_t": ...}`` (the report's
    macro average), as the parent run's metrics."""
    sums: dict[str, list[float]] = {}
    for (_, variant), metrics in per_run.items():
        for key, value in metrics.items():
            sums.setdefault(f"{variant}/{key}", []).append(value)
    return {key: sum(values) / len(values) for key, values in sums.items()}
