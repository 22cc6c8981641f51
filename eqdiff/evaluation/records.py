"""The evaluations a report reads: ``RUNS/<subject>/<variant>/{metrics.json, evaluation.json}`` (docs/method.md,
"Report").

``eqdiff evaluate`` writes ``metrics.json`` (numbers only, what ``dvc metrics`` tabulates) and its sidecar
``evaluation.json`` (calibration flags, metric models, ``subject_dir``, ...); a ``Run`` holds the two, read
through their schemas (``eqdiff.io.schemas.evaluation``), with where that subject's samples, masks, augment and
band outputs are.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from eqdiff.errors import DataError
from eqdiff.io.artifacts import ArtifactError
from eqdiff.io.run_layout import RunLayout
from eqdiff.io.schemas.evaluation import EvaluationRecord, MetricsRecord

METRICS = ("clip_t", "clip_i", "dino_i")
"""The paper's three metrics, in Table 1's order (``eqdiff evaluate`` computes them; kept here, where they are
read, so that the report and tracking import no metric models)."""


@dataclass(frozen=True)
class Run:
    """One (subject, variant) evaluation: its ``metrics.json`` and its sidecar ``evaluation.json``, and where its
    samples are; ``subject_root`` is ``RUNS/<subject>`` (``masks/``, ``augment/``, ``bands/`` of the subject)."""

    subject: str
    variant: str
    metrics: MetricsRecord
    evaluation: EvaluationRecord
    samples_dir: Path
    subject_root: Path

    @property
    def calibrated(self) -> bool:
        return self.evaluation.calibrated

    @property
    def masks_dir(self) -> Path:
        return RunLayout(self.subject_root.parent).masks(self.subject)


def discover_runs(runs_dir: str | Path, selection: list[tuple[str, str]] | None = None) -> list[Run]:
    """The ``RUNS/<subject>/<variant>/metrics.json`` of ``selection`` ((subject, variant) pairs; each must
    exist), or every one under ``RUNS`` when None; sorted by subject then variant."""
    runs_dir = Path(runs_dir)
    if not runs_dir.is_dir():
        raise DataError(f"{runs_dir}: runs folder not found")
    layout = RunLayout(runs_dir)
    if selection is None:
        selection = [
            (p.parent.parent.name, p.parent.name) for p in runs_dir.glob(f"*/*/{layout.metrics('*', '*').name}")
        ]
    pairs = sorted(set(selection))
    for subject, variant in pairs:
        if not layout.metrics(subject, variant).is_file():
            raise DataError(
                f"{layout.metrics(subject, variant)}: missing; run evaluate for this subject and variant first"
            )
    runs = []
    for subject, variant in pairs:
        path, info = layout.metrics(subject, variant), layout.evaluation(subject, variant)
        if not info.is_file():
            raise DataError(f"{info}: missing beside {path.name} (re-run `eqdiff evaluate`)")
        try:
            metrics, evaluation = MetricsRecord.read(path), EvaluationRecord.read(info)
        except ArtifactError as exc:
            raise DataError(f"{exc} (re-run `eqdiff evaluate`)") from None
        samples = layout.samples(subject, variant)
        runs.append(Run(subject, variant, metrics, evaluation, samples, layout.subject(subject)))
    if not runs:
        raise DataError(f"{runs_dir}: no <subject>/<variant>/metrics.json found")
    return runs
