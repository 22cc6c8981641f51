"""How well the world evaluators read the subject sets the experiment trains on (docs/world-evaluators.md,
"Calibration on styled subject sets").

For every held-out identity, every photo style (scene: a cluttered room) and every photo scene (style: photo),
``num_sets`` subject sets of 5 photos are drawn exactly as ``eqdiff sample --world NAME --photo-style STYLE`` /
``--photo-scene SCENE`` draws them (seeds ``0 .. num_sets - 1``), and each head of the evaluator reads every photo.
The share read right, per condition and head, is what the leak metrics and World-I rest on: a style the
evaluator cannot read in the photos cannot be counted leaking into the samples.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from eqdiff.io.artifacts import write_text
from eqdiff.world.evaluators import HEADS, IDENTITY_HEADS, WorldEvaluator
from eqdiff.world.render import render
from eqdiff.world.subjects import PHOTO_SCENE, PHOTO_STYLE, SUBJECT_SIDE, subject_specs
from eqdiff.world.vocabulary import HELD_OUT, SCENES, STYLES

PHOTOS_PER_SET = 5


def _read(evaluator: WorldEvaluator, specs: list) -> dict[str, float]:
    """Share of ``specs`` whose every head reads the truth (``second``: patterned objects only, all are)."""
    predictions = evaluator.predict([render(spec, SUBJECT_SIDE)[0] for spec in specs])
    truths = [
        {**{name: getattr(spec.identity, name) for name in IDENTITY_HEADS}, "scene": spec.scene, "style": spec.style}
        for spec in specs
    ]
    shares = {
        name: sum(p[name] == t[name] for p, t in zip(predictions, truths, strict=True)) / len(specs) for name in HEADS
    }
    shares["identity_but_texture"] = sum(
        all(p[name] == t[name] for name in IDENTITY_HEADS if name != "texture")
        for p, t in zip(predictions, truths, strict=True)
    ) / len(specs)
    return shares


def calibrate(out: Path, num_sets: int = 4, evaluator: WorldEvaluator | None = None) -> dict[str, Any]:
    """Measure and write ``calibration.json`` and ``calibration.md`` into ``out``; returns the record."""
    evaluator = evaluator or WorldEvaluator.load()
    conditions = [(style, PHOTO_SCENE) for style in STYLES] + [
        (PHOTO_STYLE, scene) for scene in SCENES if scene != PHOTO_SCENE
    ]
    rows = []
    for style, scene in conditions:
        specs = [
            spec
            for identity in HELD_OUT
            for seed in range(num_sets)
            for spec in subject_specs(identity.shape, PHOTOS_PER_SET, seed, style, scene)
        ]
        rows.append({"style": style, "scene": scene, "photos": len(specs), "read": _read(evaluator, specs)})
    record = {
        "evaluator": evaluator.record["sha256"],
        "num_sets": num_sets,
        "photos_per_set": PHOTOS_PER_SET,
        "rows": rows,
    }
    out.mkdir(parents=True, exist_ok=True)
    write_text(out / "calibration.json", json.dumps(record, indent=2) + "\n")
    write_text(out / "calibration.md", markdown(record))
    return record


def markdown(record: dict[str, Any]) -> str:
    """The calibration record as a table: one row per photo condition, one column per head."""
    heads = [*HEADS, "identity_but_texture"]
    lines = [
        f"| photos (style, scene) | n | {' | '.join(heads)} |",
        "|---|---:|" + "---:|" * len(heads),
    ]
    for row in record["rows"]:
        cells = " | ".join(f"{100 * row['read'][h]:.0f}%" for h in heads)
        lines.append(f"| {row['style']}, {row['scene']} | {row['photos']} | {cells} |")
    return "\n".join(lines) + "\n"
