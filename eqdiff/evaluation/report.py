"""The evaluation report (docs/method.md, "Report"): Table 1's layout, CLIP-T vs DINO-I trade-off (Fig. 7
lower), gallery.

Input layout (``RUNS``), one folder per subject and variant::

    RUNS/<subject>/<variant>/metrics.json    written by ``eqdiff evaluate`` (numbers)
    RUNS/<subject>/<variant>/evaluation.json written by ``eqdiff evaluate`` (calibration, subject_dir, ...)
    RUNS/<subject>/<variant>/samples/        written by ``eqdiff generate`` (index.json + PNGs)
    RUNS/<subject>/masks/                    written by ``eqdiff masks`` (optional: overlay.png and masks.json's
                                             self-check warnings are shown in the gallery)
    RUNS/<subject>/augment/sheet.png         written by ``eqdiff augment`` (optional; shown in the gallery)
    RUNS/<subject>/bands/sheet.png           written by ``eqdiff bands`` (optional; shown in the gallery)

The subject's photos are found through the ``subject_dir`` field that ``eqdiff evaluate`` records in
``evaluation.json`` (a relative path is taken from the current directory, as DVC stages run from the repository
root). Output (``OUT``), built in a staging folder and swapped in whole:

    summary.json      per variant x prompt set: CLIP-T, CLIP-I, DINO-I (and World-T, World-I when every run has
                      the world metrics) averaged over subjects (dvc metrics: numbers only)
    report.json       the report's flags: ``{"calibrated": bool}``, plus ``world_evaluator`` (its weights, sha256
                      and measured accuracy) when the world metrics are shown
    table.md          Table 1's layout (rows = variants; unstylized, stylized x CLIP-T, CLIP-I, DINO-I, then any
                      other prompt set, e.g. ``live``, the same way), averaged with the paper's rows (marked
                      ``paper:``), then per subject
    tradeoff.png      CLIP-T vs DINO-I, one labelled point per variant x prompt set; with the world metrics,
                      World-T vs World-I instead (the world evaluators' text alignment vs identity)
    tradeoff.csv/json the same points for ``dvc plots`` (dino_i, clip_t, world_identity, world_text; null without
                      world metrics)
    index.html, gallery/<subject>.html, gallery/assets/   a static gallery that works from the file system

When any run is uncalibrated (random metric weights or noise samples), every output says so.
"""

from __future__ import annotations

import csv
import io
import logging
from dataclasses import replace
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # headless: the report is built on CI and servers without a display
import matplotlib.pyplot as plt  # noqa: E402

from eqdiff.evaluation import intervals  # noqa: E402
from eqdiff.evaluation.gallery import write_gallery  # noqa: E402
from eqdiff.evaluation.metric_registry import metric_family  # noqa: E402
from eqdiff.evaluation.records import Run, discover_runs  # noqa: E402
from eqdiff.evaluation.table1 import (  # noqa: E402
    METRIC_TITLES,
    PAPER_SOURCE,
    columns,
    markdown_table,
    table_sets,
    world_sentence,
)
from eqdiff.io.artifacts import OutputLock, staged_directory, write_json, write_text  # noqa: E402
from eqdiff.io.output_safety import claim_output  # noqa: E402

logger = logging.getLogger(__name__)

UNCALIBRATED = "uncalibrated (random weights)"
MARKERS = ("o", "s", "^", "D", "v", "P", "X")
"""The trade-off plot's marker per prompt set, in ``table_sets`` order (unstylized o, stylized s, then the others)."""


def summarize(runs: list[Run]) -> dict[str, Any]:
    """Table 1's numbers: per subject and averaged over subjects (macro average), per variant x prompt set.

    ``{"calibrated": bool, "world_evaluator": dict | None, "variants": {V: {set: {clip_t, clip_i, dino_i,
    n_subjects}}}, "subjects": {S: {V: {set: {clip_t, clip_i, dino_i, n_images}}}}}``; every block also has
    ``world_text``, ``world_identity`` when every run was evaluated with ``evaluate.world`` (then
    ``world_evaluator`` is the first run's record of the evaluator, else None).
    """
    world = all(run.evaluation.world_evaluator is not None for run in runs)
    keys = (*columns(world), "n_images")
    subjects: dict[str, dict[str, Any]] = {}
    for run in runs:
        blocks = run.metrics.sets
        subjects.setdefault(run.subject, {})[run.variant] = {
            s: {k: getattr(blocks[s], k) for k in keys} for s in table_sets(blocks) if s in blocks
        }
    all_subjects = set(subjects)
    variants: dict[str, dict[str, Any]] = {}
    for variant in sorted({run.variant for run in runs}):
        for prompt_set in table_sets(s for subject in subjects.values() for s in subject.get(variant, {})):
            rows = [s[variant][prompt_set] for s in subjects.values() if prompt_set in s.get(variant, {})]
            if not rows:
                continue
            # a leak is absent where no prompt of the set asks for another style / scene: averaged where present
            present = {k: [r[k] for r in rows if r[k] is not None] for k in columns(world)}
            means = {k: sum(values) / len(values) for k, values in present.items() if values}
            variants.setdefault(variant, {})[prompt_set] = {**means, "n_subjects": len(rows)}
        covered = {name for name, s in subjects.items() if variant in s}
        if covered != all_subjects:
            logger.warning(
                "variant %s has no run for %s: its averages cover %d of %d subjects",
                variant,
                ", ".join(sorted(all_subjects - covered)),
                len(covered),
                len(all_subjects),
            )
    calibrated = all(run.calibrated for run in runs)
    evaluator = runs[0].evaluation.world_evaluator if world and runs else None
    if evaluator is not None:  # the per-image readings are the runs' data, not the evaluator's record
        evaluator = {k: v for k, v in evaluator.items() if k != "images"}
    summary = {"calibrated": calibrated, "world_evaluator": evaluator, "variants": variants, "subjects": subjects}
    if world:
        summary["intervals"] = world_intervals(runs)
    return summary


BASELINE = "A"
"""The variant every other is compared with (Custom Diffusion, docs/method.md "Variants")."""


def world_intervals(runs: list[Run]) -> dict[str, Any]:
    """The world metrics' 95 % intervals and paired differences against ``BASELINE`` (``eqdiff.evaluation.
    intervals``), from each image's values in ``evaluation.json`` (runs evaluated before they were recorded have
    none and are left out):

    ``{"level": 0.95, "replicates": B, "baseline": "A", "variants": {V: {set: {metric: [value, low, high]}}},
    "differences": {V: {set: {metric: {difference, interval, p, p_holm}}}}}``; Holm's adjustment is across the
    variants compared with the baseline, per prompt set and metric.
    """
    data: dict[str, dict[str, dict[str, dict[str, list[dict]]]]] = {}  # variant -> set -> metric -> subject -> runs
    for run in runs:
        for image in (run.evaluation.world_evaluator or {}).get("images", []):
            for metric, value in image.get("values", {}).items():
                by_subject = data.setdefault(run.variant, {}).setdefault(image["prompt_set"], {}).setdefault(metric, {})
                runs_of_subject = by_subject.setdefault(run.subject, [{}])
                runs_of_subject[0][image["file"]] = value
    metrics = metric_family("world").metrics
    out: dict[str, Any] = {
        "level": intervals.LEVEL,
        "replicates": intervals.REPLICATES,
        "baseline": BASELINE,
        "variants": {},
        "differences": {},
    }
    for variant, sets in data.items():
        for prompt_set, by_metric in sets.items():
            for metric in metrics:
                if (found := intervals.bootstrap(by_metric.get(metric, {}))) is not None:
                    out["variants"].setdefault(variant, {}).setdefault(prompt_set, {})[metric] = found.to_json()
    if BASELINE in data:
        for prompt_set in {s for sets in data.values() for s in sets}:
            for metric in metrics:
                base = data[BASELINE].get(prompt_set, {}).get(metric, {})
                found = {
                    variant: intervals.paired_difference(sets.get(prompt_set, {}).get(metric, {}), base)
                    for variant, sets in data.items()
                    if variant != BASELINE
                }
                found = {variant: d for variant, d in found.items() if d is not None}
                adjusted = intervals.holm([d.p for d in found.values()])
                for (variant, d), p_holm in zip(found.items(), adjusted, strict=True):
                    block = out["differences"].setdefault(variant, {}).setdefault(prompt_set, {})
                    block[metric] = replace(d, p_holm=p_holm).to_json()
    return out


def markdown_report(summary: dict[str, Any]) -> str:
    """``table.md``: Table 1's layout averaged (with the paper's rows, marked), then one table per subject; an
    uncalibrated banner when it applies."""
    lines = ["# EqDiff evaluation", ""]
    evaluator, world = summary["world_evaluator"], summary["world_evaluator"] is not None
    if not summary["calibrated"] and world:
        lines += [
            "> **UNCALIBRATED: the CLIP-T, CLIP-I and DINO-I columns** (random-weight CLIP / DINO models). World-T,",
            "> World-I and the leaks are read by the world evaluators, calibrated by their measured accuracy.",
            "",
        ]
    elif not summary["calibrated"]:
        lines += [
            f"> **{UNCALIBRATED.upper()}**: the CLIP/DINO numbers come from random metric weights and/or noise",
            "> samples (tiny preset); they exercise the pipeline and mean nothing.",
            "",
        ]
    lines += [
        "CLIP-T = mean 2.5·max(cos, 0) (CLIPScore, w = 2.5); CLIP-I, DINO-I = mean cosine over all",
        f"(generated, real) pairs. Rows marked `paper:` are the values of {PAPER_SOURCE}, not measured here.",
        "",
    ]
    if world:
        lines += [world_sentence(evaluator), ""]
    lines += [f"## Average over {len(summary['subjects'])} subject(s)", ""]
    bounds = summary.get("intervals", {}).get("variants")
    lines += markdown_table(summary["variants"], paper=True, world=world, intervals=bounds)
    if bounds:
        lines += ["", INTERVALS_SENTENCE]
    lines += differences_table(summary.get("intervals", {}))
    for subject, variants in summary["subjects"].items():
        lines += ["", f"## {subject}", ""]
        lines += markdown_table(variants, world=world)
    return "\n".join(lines) + "\n"


INTERVALS_SENTENCE = (
    "In brackets: 95 % bootstrap intervals of the world metrics, resampling subjects, then each subject's runs, "
    'then each run\'s images (docs/method.md, "Intervals").'
)


def differences_table(found: dict[str, Any]) -> list[str]:
    """Markdown: each variant's paired difference against the baseline, per prompt set and world metric, with its
    interval and Holm-adjusted p; an interval that includes zero is marked."""
    differences = found.get("differences") or {}
    if not differences:
        return []
    lines = [
        "",
        f"## Paired differences against {found['baseline']} (world metrics)",
        "",
        "| Variant | prompt set | metric | difference | 95 % interval | p (Holm) | |",
        "|---|---|---|---:|---:|---:|---|",
    ]
    for variant, sets in differences.items():
        for prompt_set in table_sets(sets):
            for metric, d in sets.get(prompt_set, {}).items():
                low, high = d["interval"]
                zero = "includes 0" if low <= 0 <= high else ""
                lines.append(
                    f"| {variant} − {found['baseline']} | {prompt_set} | {METRIC_TITLES[metric]} | "
                    f"{d['difference']:+.3f} | [{low:+.3f}, {high:+.3f}] | {d['p_holm']:.3f} | {zero} |"
                )
    return lines


def tradeoff_points(summary: dict[str, Any]) -> list[dict[str, Any]]:
    """One point per variant x prompt set: ``{variant, prompt_set, label, clip_t, dino_i, world_text,
    world_identity}``, the world metrics ``None`` (JSON null) when the runs had no world evaluation: every point
    has every field, so both of dvc.yaml's trade-off plots read the file without a missing-field error (an
    empty plot, not a failing one)."""
    return [
        {
            "variant": variant,
            "prompt_set": prompt_set,
            "label": f"{variant} ({prompt_set})",
            "clip_t": row["clip_t"],
            "dino_i": row["dino_i"],
            **{k: row.get(k) for k in metric_family("world").metrics},
        }
        for variant, sets in summary["variants"].items()
        for prompt_set, row in sets.items()
    ]


def tradeoff_csv(points: list[dict[str, Any]]) -> str:
    buffer = io.StringIO()
    fields = ["variant", "prompt_set", "label", "clip_t", "dino_i", *metric_family("world").metrics]  # None: empty
    writer = csv.DictWriter(buffer, fieldnames=fields, lineterminator="\n")
    writer.writeheader()
    writer.writerows(points)
    return buffer.getvalue()


def plot_tradeoff(
    points: list[dict[str, Any]], calibrated: bool, path: Path, world: bool = False, intervals: dict | None = None
) -> None:
    """CLIP-T (y) vs DINO-I (x), as the paper's Fig. 7 (lower); with ``world``, World-T (y) vs World-I (x), the
    same axes (text alignment vs identity) measured by the world evaluators, whose accuracy calibrates them, with
    each point's 95 % intervals (``intervals``: ``world_intervals``'s ``variants``) as error bars. PNG at
    ``path``."""
    x, y = ("world_identity", "world_text") if world else ("dino_i", "clip_t")
    calibrated = calibrated or world
    figure, axes = plt.subplots(figsize=(6, 4.5), dpi=100)
    for number, prompt_set in enumerate(table_sets(p["prompt_set"] for p in points)):
        chosen = [p for p in points if p["prompt_set"] == prompt_set]
        axes.scatter(
            [p[x] for p in chosen],
            [p[y] for p in chosen],
            marker=MARKERS[number % len(MARKERS)],
            label=prompt_set,
        )
        for p in chosen:
            axes.annotate(p["variant"], (p[x], p[y]), textcoords="offset points", xytext=(4, 4))
            bounds = (intervals or {}).get(p["variant"], {}).get(prompt_set, {})
            if x in bounds and y in bounds:
                (_, x_low, x_high), (_, y_low, y_high) = bounds[x], bounds[y]
                axes.errorbar(
                    p[x],
                    p[y],
                    xerr=[[p[x] - x_low], [x_high - p[x]]],
                    yerr=[[p[y] - y_low], [y_high - p[y]]],
                    fmt="none",
                    ecolor="grey",
                    elinewidth=0.8,
                    capsize=2,
                )
    names = {"dino_i": "DINO-I", "clip_t": "CLIP-T", "world_identity": "World-I", "world_text": "World-T"}
    axes.set_xlabel(f"{names[x]} (subject fidelity)")
    axes.set_ylabel(f"{names[y]} (text alignment)")
    title = f"{names[y]} vs {names[x]} per variant" + (" (world evaluators)" if world else "")
    axes.set_title(
        title if calibrated else f"{title}\n{UNCALIBRATED.upper()}",
        color="black" if calibrated else "firebrick",
    )
    axes.legend()
    axes.grid(alpha=0.3)
    figure.tight_layout()
    figure.savefig(path, format="png")
    plt.close(figure)


def build_report(runs_dir: str | Path, out_dir: str | Path, selection: list[tuple[str, str]] | None = None) -> Path:
    """Write the report of ``selection`` ((subject, variant) pairs; None: every run under ``runs_dir``) into
    ``out_dir`` (replaced atomically); returns ``out_dir``."""
    out_dir = Path(out_dir)
    runs = discover_runs(runs_dir, selection)
    subjects = {run.evaluation.subject_dir for run in runs}
    claim_output(out_dir, "report", manifest="summary.json", reads=[Path(runs_dir)], folders=map(Path, subjects))
    summary = summarize(runs)
    if not summary["calibrated"] and summary["world_evaluator"] is not None:
        logger.warning("CLIP/DINO columns are %s; World-T / World-I come from the world evaluators", UNCALIBRATED)
    elif not summary["calibrated"]:
        logger.warning("report is %s: its numbers mean nothing", UNCALIBRATED)
    points = tradeoff_points(summary)
    with OutputLock(out_dir), staged_directory(out_dir) as staging:
        flags = {"calibrated": summary["calibrated"]}
        if summary["world_evaluator"] is not None:
            flags["world_evaluator"] = summary["world_evaluator"]
            flags["intervals"] = summary["intervals"]
        write_json(staging / "summary.json", {k: v for k, v in summary.items() if k not in flags})
        write_json(staging / "report.json", flags)
        write_text(staging / "table.md", markdown_report(summary))
        write_text(staging / "tradeoff.csv", tradeoff_csv(points))
        write_json(staging / "tradeoff.json", points)
        world = summary["world_evaluator"] is not None
        bounds = summary["intervals"]["variants"] if world else None
        plot_tradeoff(points, summary["calibrated"], staging / "tradeoff.png", world, bounds)
        write_gallery(runs, summary, staging)
    logger.info("report of %d run(s) written to %s", len(runs), out_dir)
    return out_dir
