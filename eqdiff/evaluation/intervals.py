"""Bootstrap intervals for the report's numbers (docs/method.md, "Intervals").

A number in the report is a macro average: over subjects, of each subject's mean over its runs (training seeds,
when a variant has several), of each run's mean over its images. Its 95 % interval resamples the data as they
were drawn: subjects with replacement, then, inside each drawn subject, its runs with replacement, then, inside
each drawn run, its images with replacement (a clustered, hierarchical bootstrap: images of one concept are not
independent draws, and neither are the concepts of one subject). With one subject the interval covers the
images' (and runs') variation only, and says nothing about other subjects.

The paired difference of two variants (F − A) resamples both with the same draws: the same subjects, the same
run positions (seed k with seed k) and the same images (an image is keyed by its prompt set, prompt and sample
index, which both variants share), so what varies with the subject or prompt cancels. Its two-sided bootstrap
p-value is ``(1 + #{d* on the far side of 0}) / (1 + B)``, doubled and capped at 1; ``holm`` adjusts a family of
them (Holm 1979), as the report does across the variants compared with the baseline.

Pure numpy, seeded: the same inputs give the same intervals.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

REPLICATES = 2000
LEVEL = 0.95
SEED = 0

Run = Mapping[tuple, float]
"""One run's per-image values, by image key (eligible images only: an image a metric leaves out is absent)."""
Data = Mapping[str, Sequence[Run]]
"""Subject -> its runs (training seeds, in seed order) -> per-image values."""


@dataclass(frozen=True)
class Interval:
    """A point estimate and its bootstrap interval."""

    value: float
    low: float
    high: float

    def to_json(self) -> list[float]:
        return [self.value, self.low, self.high]


@dataclass(frozen=True)
class Difference(Interval):
    """A paired difference (this variant − the baseline), its interval and two-sided p-value; ``p_holm`` is
    Holm-adjusted across the family it was compared in (None until adjusted)."""

    p: float = 1.0
    p_holm: float | None = None

    def to_json(self) -> dict[str, float | list[float] | None]:
        return {"difference": self.value, "interval": [self.low, self.high], "p": self.p, "p_holm": self.p_holm}


def _mean_of_means(data: Data) -> float:
    subject_means = []
    for runs in data.values():
        run_means = [float(np.mean(list(run.values()))) for run in runs if run]
        if run_means:
            subject_means.append(float(np.mean(run_means)))
    return float(np.mean(subject_means)) if subject_means else float("nan")


def _draws(keys: Mapping[str, Sequence[Sequence[tuple]]], rng: np.random.Generator, replicates: int) -> list:
    """The resampling plan of ``replicates`` bootstrap draws, as draw counts: per subject ``(B,)`` (how often it
    is drawn), per subject ``(B, runs)`` for its run positions and, per run, ``(B, images)`` for its images. Two
    variants evaluated under one plan are resampled alike."""
    subjects = list(keys)
    subject_counts = rng.multinomial(len(subjects), [1 / len(subjects)] * len(subjects), size=replicates)
    plan = []
    for s, subject in enumerate(subjects):
        runs = keys[subject]
        run_counts = rng.multinomial(len(runs), [1 / len(runs)] * len(runs), size=replicates)
        image_counts = [rng.multinomial(len(k), [1 / len(k)] * len(k), size=replicates) for k in runs]
        plan.append((subject, subject_counts[:, s], run_counts, image_counts))
    return plan


def _replicate_means(data: Data, keys: Mapping[str, Sequence[Sequence[tuple]]], plan) -> np.ndarray:
    """``(B,)`` macro averages of ``data`` under the resampling ``plan`` (weights are draw counts)."""
    total = 0.0
    weight = 0.0
    for subject, subject_count, run_counts, image_counts in plan:
        run_means = []
        for position, counts in enumerate(image_counts):
            values = np.array([data[subject][position][key] for key in keys[subject][position]], dtype=np.float64)
            run_means.append((counts @ values) / counts.sum(axis=1))
        subject_mean = (run_counts * np.stack(run_means, axis=1)).sum(axis=1) / run_counts.sum(axis=1)
        total = total + subject_count * subject_mean
        weight = weight + subject_count
    return total / weight


def _keys(data: Data) -> dict[str, list[list[tuple]]]:
    """The image keys of every run with any, by subject (subjects and runs without eligible images drop out)."""
    keys = {}
    for subject, runs in data.items():
        kept = [sorted(run) for run in runs if run]
        if kept:
            keys[subject] = kept
    return keys


def _bounds(samples: np.ndarray, level: float) -> tuple[float, float]:
    tail = (1 - level) / 2
    return float(np.quantile(samples, tail)), float(np.quantile(samples, 1 - tail))


def bootstrap(data: Data, replicates: int = REPLICATES, level: float = LEVEL, seed: int = SEED) -> Interval | None:
    """The macro average of ``data`` and its clustered bootstrap interval; None without any value."""
    keys = _keys(data)
    if not keys:
        return None
    rng = np.random.default_rng(seed)
    samples = _replicate_means(data, keys, _draws(keys, rng, replicates))
    return Interval(_mean_of_means(data), *_bounds(samples, level))


def paired_difference(
    data: Data, baseline: Data, replicates: int = REPLICATES, level: float = LEVEL, seed: int = SEED
) -> Difference | None:
    """``data`` − ``baseline`` (macro averages) under shared draws: the subjects, run positions and image keys
    both have; None when they share none."""
    shared: dict[str, list[list[tuple]]] = {}
    mine: dict[str, list[dict[tuple, float]]] = {}
    theirs: dict[str, list[dict[tuple, float]]] = {}
    for subject, runs in data.items():
        other = baseline.get(subject, ())
        for run, base in zip(runs, other, strict=False):  # seed k with seed k
            keys = sorted(set(run) & set(base))
            if keys:
                shared.setdefault(subject, []).append(keys)
                mine.setdefault(subject, []).append({key: run[key] for key in keys})
                theirs.setdefault(subject, []).append({key: base[key] for key in keys})
    if not shared:
        return None
    rng = np.random.default_rng(seed)
    plan = _draws(shared, rng, replicates)
    samples = _replicate_means(mine, shared, plan) - _replicate_means(theirs, shared, plan)
    value = _mean_of_means(mine) - _mean_of_means(theirs)
    far = min(int((samples <= 0).sum()), int((samples >= 0).sum()))
    p = min(1.0, 2 * (1 + far) / (1 + replicates))
    return Difference(value, *_bounds(samples, level), p=p)


def holm(p_values: Sequence[float]) -> list[float]:
    """Holm's step-down adjustment of a family of p-values (same order as given)."""
    order = sorted(range(len(p_values)), key=lambda i: p_values[i])
    adjusted = [0.0] * len(p_values)
    running = 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (len(p_values) - rank) * p_values[i]))
        adjusted[i] = running
    return adjusted
