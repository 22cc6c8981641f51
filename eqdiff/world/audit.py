"""A blind audit of the world evaluators on generated samples (docs/world-evaluators.md, "Blind audit").

The evaluators were measured on renders; the leaks and World-T read *generated* samples. The audit checks that
reading against a person's: ``draw`` picks samples at random from finished runs (``runs/<subject>/<variant>``, each
with ``samples/`` and the ``evaluation.json`` of ``evaluate.world``), writes them as one numbered sheet with
nothing else on it (no prompt, variant or reading) and a ``labels.csv`` to fill in, and keeps the evaluators'
readings in ``key.json`` (not to be opened before labelling). ``score`` compares the filled-in labels with the
key: per attribute, the share of samples where the person and the evaluator agree, with its 95 % Wilson interval,
and every disagreement.

    python -m eqdiff.world audit draw --runs runs/ball/A runs/ball/F --n 60 --out audit
    (label audit/sheet.png in audit/labels.csv)
    python -m eqdiff.world audit score --out audit
"""

from __future__ import annotations

import csv
import json
import math
import random
from dataclasses import dataclass
from pathlib import Path

from PIL import Image, ImageDraw

from eqdiff.errors import DataError
from eqdiff.io.artifacts import save_png, write_json, write_text
from eqdiff.io.schemas.evaluation import EvaluationRecord
from eqdiff.io.sheets import fit
from eqdiff.world.vocabulary import SCENES, SHAPES, STYLES

AUDITED = {"style": STYLES, "scene": SCENES, "shape": SHAPES}
"""The attributes a person labels, and their allowed answers (``shape``: ``none`` where no object is drawn)."""
TILE = 192
"""Side of one sample on the sheet (the world's 64 px samples, enlarged 3 times)."""
COLUMNS = 8


@dataclass(frozen=True)
class Sample:
    number: int
    run: str
    file: str
    predictions: dict[str, str]


def _run_samples(run: Path) -> list[tuple[str, str, dict[str, str]]]:
    """(run, file, the evaluators' readings) of every sample of one finished run."""
    record_file = run / EvaluationRecord.FILE
    if not record_file.is_file():
        raise DataError(f"{record_file}: not found (run `eqdiff evaluate` with evaluate.world: true first)")
    record = EvaluationRecord.from_json(json.loads(record_file.read_text()), str(record_file))
    images = (record.world_evaluator or {}).get("images")
    if not images:
        raise DataError(f"{record_file}: no world_evaluator.images (evaluate with evaluate.world: true)")
    return [(str(run), image["file"], dict(image["predictions"])) for image in images]


def draw(runs: list[Path], n: int, seed: int, out: Path) -> list[Sample]:
    """Pick ``n`` samples of ``runs`` at random (``seed``), shuffled, and write ``out``'s sheet, labels and key."""
    if out.exists():
        raise DataError(f"{out}: already exists (an audit is drawn once; choose a new folder)")
    pool = [entry for run in runs for entry in _run_samples(run)]
    if len(pool) < n:
        raise DataError(f"--n {n}: the runs hold only {len(pool)} samples")
    picked = random.Random(seed).sample(pool, n)
    samples = [Sample(k + 1, run, file, predictions) for k, (run, file, predictions) in enumerate(picked)]
    rows = math.ceil(n / COLUMNS)
    sheet = Image.new("RGB", (COLUMNS * (TILE + 4), rows * (TILE + 22)), (255, 255, 255))
    pen = ImageDraw.Draw(sheet)
    for k, sample in enumerate(samples):
        x, y = (k % COLUMNS) * (TILE + 4), (k // COLUMNS) * (TILE + 22)
        image = Image.open(Path(sample.run) / "samples" / sample.file).convert("RGB")
        sheet.paste(fit(image.resize((TILE, TILE), Image.Resampling.NEAREST), TILE), (x, y + 20))
        pen.text((x + 2, y + 4), f"#{sample.number}", fill=(0, 0, 0))
    save_png(out / "sheet.png", sheet)
    header = ["number", *AUDITED]
    blank = "\n".join([",".join(header), *(f"{s.number}" + "," * len(AUDITED) for s in samples)]) + "\n"
    write_text(out / "labels.csv", blank)
    key = {"seed": seed, "runs": [str(r) for r in runs], "samples": [sample.__dict__ for sample in samples]}
    write_json(out / "key.json", key)
    return samples


def wilson(agree: int, n: int) -> tuple[float, float]:
    """95 % Wilson score interval of ``agree`` out of ``n``."""
    if n == 0:
        return 0.0, 1.0
    z, p = 1.959964, agree / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return max(0.0, centre - half), min(1.0, centre + half)


def score(out: Path) -> str:
    """Compare ``out/labels.csv`` with ``out/key.json``; a markdown table of agreement and the disagreements."""
    key = json.loads((out / "key.json").read_text())
    samples = {s["number"]: s for s in key["samples"]}
    with (out / "labels.csv").open(newline="") as handle:
        labels = {int(row["number"]): row for row in csv.DictReader(handle)}
    if sorted(labels) != sorted(samples):
        raise DataError(f"{out / 'labels.csv'}: expected one row per sample number 1..{len(samples)}")
    lines = ["| attribute | samples | person = evaluator | share | 95 % interval |", "|---|---:|---:|---:|---|"]
    misses = []
    for attribute, allowed in AUDITED.items():
        rated = 0
        agree = 0
        for number, row in sorted(labels.items()):
            answer = row[attribute].strip()
            choices = (*allowed, "none") if attribute == "shape" else allowed
            if answer not in choices:
                raise DataError(f"labels.csv row {number}: {attribute} {answer!r}, expected one of {choices}")
            if answer == "none":  # no object drawn: nothing to compare for the shape
                continue
            rated += 1
            reading = samples[number]["predictions"][attribute]
            agree += reading == answer
            if reading != answer:
                misses.append(f"#{number} {attribute}: person {answer}, evaluator {reading} ({samples[number]['run']})")
        low, high = wilson(agree, rated)
        share = agree / rated if rated else float("nan")
        lines.append(f"| {attribute} | {rated} | {agree} | {share:.0%} | [{low:.0%}, {high:.0%}] |")
    return "\n".join([*lines, "", "Disagreements:", *(f"- {m}" for m in misses)]) + "\n"
