"""Finished evaluations written through their schemas (``eqdiff.io.schemas.evaluation``): the ``metrics.json`` and
``evaluation.json`` of one (subject, variant) run, for the report and tracking tests that need no real
evaluation."""

from __future__ import annotations

from pathlib import Path

from eqdiff.io.artifacts import write_json
from eqdiff.io.schemas.evaluation import EvaluationRecord, MetricsRecord, SetMetrics


def write_evaluation(
    run: Path, subject_dir: str | Path, clip_t: float = 0.2, prompt_sets: tuple[str, ...] = ("unstylized",)
) -> None:
    """``run/metrics.json`` (every set: CLIP-T ``clip_t``, CLIP-I half of it, DINO-I a quarter) and
    ``run/evaluation.json`` (uncalibrated, random metric models) of the run ``RUNS/<subject>/<variant>``."""
    block = SetMetrics(
        clip_t=clip_t, clip_t_cosine=clip_t / 2.5, clip_i=clip_t / 2, dino_i=clip_t / 4, n_images=2, n_prompts=1
    )
    write_json(run / MetricsRecord.FILE, MetricsRecord(3, dict.fromkeys(prompt_sets, block)).to_json())
    info = EvaluationRecord(
        calibrated=False,
        metric_models_calibrated=False,
        samples_calibrated=False,
        clip_model="random-init:clip-vit-b32:seed=0",
        dino_model="random-init:dino-vits16:seed=0",
        subject=run.parent.name,
        variant=run.name,
        subject_dir=str(subject_dir),
        per_prompt={},
    )
    write_json(run / EvaluationRecord.FILE, info.to_json())
