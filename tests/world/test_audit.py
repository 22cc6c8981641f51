"""The blind audit of the world evaluators (docs/world-evaluators.md, "Blind audit"): the sheet shows samples and
numbers only, the key keeps the evaluators' readings, and the score is the agreement with the person's labels."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
from PIL import Image
from support.evaluations import write_evaluation
from support.metric_models import noise_image

from eqdiff.errors import DataError
from eqdiff.world.__main__ import main
from eqdiff.world.audit import TILE, draw, score, wilson

READINGS = [
    {"style": "watercolor", "scene": "beach", "shape": "ball"},
    {"style": "photo", "scene": "snow", "shape": "box"},
    {"style": "pencil", "scene": "city", "shape": "heart"},
]


def finished_run(root: Path, variant: str, seed: int) -> Path:
    """runs/ball/<variant>: 3 samples and an evaluation.json with the world evaluators' readings of each."""
    run = root / "ball" / variant
    write_evaluation(run, root / "photos")
    images = []
    for k, predictions in enumerate(READINGS):
        file = f"unstylized/000_{k:02d}.png"
        (run / "samples" / file).parent.mkdir(parents=True, exist_ok=True)
        noise_image(seed * 10 + k).save(run / "samples" / file)
        images.append({"file": file, "predictions": predictions, "prompt_set": "unstylized", "prompt_index": 0})
    record = json.loads((run / "evaluation.json").read_text())
    record["world_evaluator"] = {"weights": "w", "sha256": "0" * 64, "accuracy": {}, "images": images}
    (run / "evaluation.json").write_text(json.dumps(record))
    return run


def test_the_sheet_hides_everything_but_the_samples_and_the_score_counts_agreement(tmp_path: Path, capsys):
    runs = [finished_run(tmp_path / "runs", "A", 0), finished_run(tmp_path / "runs", "F", 1)]
    out = tmp_path / "audit"
    samples = draw(runs, 4, seed=0, out=out)
    assert [s.number for s in samples] == [1, 2, 3, 4] and len({(s.run, s.file) for s in samples}) == 4
    assert Image.open(out / "sheet.png").size[0] >= 4 * TILE
    blank = (out / "labels.csv").read_text().splitlines()
    assert blank == ["number,style,scene,shape", "1,,,", "2,,,", "3,,,", "4,,,"]  # nothing but the numbers
    # Labels: the person agrees on every style, on no scene, and sees no object in sample 4.
    rows = [
        {"number": s.number, "style": s.predictions["style"], "scene": "jungle", "shape": s.predictions["shape"]}
        for s in samples
    ]
    rows[3]["shape"] = "none"
    with (out / "labels.csv").open("w", newline="") as handle:
        writer = csv.DictWriter(handle, ["number", "style", "scene", "shape"])
        writer.writeheader()
        writer.writerows(rows)
    table = score(out)
    assert (
        "| style | 4 | 4 | 100% |" in table
        and "| scene | 4 | 0 | 0% |" in table
        and "| shape | 3 | 3 | 100% |" in table
    )
    assert table.count("scene: person jungle, evaluator") == 4
    assert main(["audit", "score", "--out", str(out)]) == 0 and capsys.readouterr().out == table

    rows[0]["style"] = "sepia"
    with (out / "labels.csv").open("w", newline="") as handle:
        writer = csv.DictWriter(handle, ["number", "style", "scene", "shape"])
        writer.writeheader()
        writer.writerows(rows)
    with pytest.raises(DataError, match=r"labels.csv row 1: style 'sepia', expected one of"):
        score(out)
    assert main(["audit", "draw", "--runs", *map(str, runs), "--n", "4", "--out", str(out)]) == 2
    assert "already exists" in capsys.readouterr().err
    with pytest.raises(DataError, match=r"--n 7: the runs hold only 6 samples"):
        draw(runs, 7, seed=0, out=tmp_path / "other")
    assert not (tmp_path / "other").exists()


def test_wilson_interval():
    low, high = wilson(39, 64)
    assert (round(low, 2), round(high, 2)) == (0.49, 0.72)
    assert wilson(0, 0) == (0.0, 1.0) and wilson(10, 10)[1] == pytest.approx(1.0)
