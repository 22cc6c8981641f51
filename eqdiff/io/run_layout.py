"""Where each stage's outputs live under a runs folder: the layout of dvc.yaml, read by the flows' tasks,
MLflow tracking, the report and the tests.

``runs/<subject>/{masks,augment,bands}/``, ``runs/prior/<class slug>/``, and per (subject, variant)
``runs/<subject>/<variant>/{concept,concept-work,samples}/``, ``losses.jsonl``, ``metrics.json`` and
``evaluation.json``. A layout is rooted where the runs live: ``RunLayout.under(store, "runs")`` resolves a
relative runs folder against a store root (the project directory, or the shared filesystem of a cluster:
README "Scaling out"), so every path it hands out is absolute and means the same on every machine that mounts
the store at that path.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from eqdiff.prep.classes import class_slug

EVALUATION_FILE = "evaluation.json"
"""Beside ``metrics.json``: calibration flags, the models and subject folder used, per-prompt CLIP-T."""


@dataclass(frozen=True)
class RunLayout:
    """The runs folder ``runs`` and the path of every stage output under it."""

    runs: Path

    @classmethod
    def under(cls, root: str | Path, runs: str | Path = "runs") -> RunLayout:
        """``runs`` resolved against ``root`` (an absolute ``runs`` stays as it is), made absolute."""
        return cls((Path(root) / runs).absolute())

    def subject(self, subject: str) -> Path:
        return self.runs / subject

    def masks(self, subject: str) -> Path:
        return self.runs / subject / "masks"

    def augment(self, subject: str) -> Path:
        return self.runs / subject / "augment"

    def bands(self, subject: str) -> Path:
        return self.runs / subject / "bands"

    def prior(self, class_noun: str) -> Path:
        """``runs/prior/<slug>``: the folder is named by the noun's slug, as dvc.yaml's ``prior@<slug>``."""
        return self.runs / "prior" / class_slug(class_noun)

    def run(self, subject: str, variant: str) -> Path:
        """The folder of one (subject, variant): its concept, samples and scores."""
        return self.runs / subject / variant

    def concept(self, subject: str, variant: str) -> Path:
        return self.run(subject, variant) / "concept"

    def concept_work(self, subject: str, variant: str) -> Path:
        """Training checkpoints and the live loss log (no DVC output): what a killed ``train`` resumes from."""
        return self.run(subject, variant) / "concept-work"

    def losses(self, subject: str, variant: str) -> Path:
        return self.run(subject, variant) / "losses.jsonl"

    def samples(self, subject: str, variant: str) -> Path:
        return self.run(subject, variant) / "samples"

    def metrics(self, subject: str, variant: str) -> Path:
        return self.run(subject, variant) / "metrics.json"

    def evaluation(self, subject: str, variant: str) -> Path:
        return self.run(subject, variant) / EVALUATION_FILE
