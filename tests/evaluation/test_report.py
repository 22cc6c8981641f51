"""``eqdiff report`` (docs/method.md, "Report"): two subjects x two variants of real PNG samples, with the masks,
augment and band sheets of the real stage functions -> evaluate -> report, read back as files and in Chromium."""

from __future__ import annotations

import argparse
import csv
import json
import re
import shutil
import subprocess
import sys
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from support.browser import chromium, dump_dom
from support.metric_models import small_models, write_samples

from eqdiff.config import AugmentConfig, EvaluateConfig, FdteConfig, MasksConfig
from eqdiff.errors import DataError
from eqdiff.evaluation.evaluate import evaluate, split_metrics
from eqdiff.evaluation.report import build_report
from eqdiff.evaluation.table1 import PAPER_ROWS
from eqdiff.io.artifacts import save_png, write_json
from eqdiff.method.fdte import band_images
from eqdiff.prep.augment import augment_subject
from eqdiff.prep.bands import band_sheet
from eqdiff.prep.masks import compute_masks
from eqdiff.prep.sample import make_sample_subject
from eqdiff.prep.subjects import discover_subject, preprocess_target

SUBJECTS = ("toy", "can")
VARIANTS = ("A", "F")


@pytest.fixture(scope="module")
def runs_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``RUNS/<subject>/<variant>/{samples/, metrics.json, evaluation.json}``, ``RUNS/<subject>/masks/``: 2 x 2 runs."""
    root = tmp_path_factory.mktemp("report")
    runs = root / "runs"
    models = small_models()
    for s, subject in enumerate(SUBJECTS):
        photos = make_sample_subject(root / "subjects" / subject, num_photos=2, seed=s)
        _subject_sheets(photos, runs / subject, second_part=subject == "can")
        for v, variant in enumerate(VARIANTS):
            samples = write_samples(
                runs / subject / variant / "samples",
                subject=subject,
                variant=variant,
                per_prompt=1,
                seed=10 * s + v,
            )
            numbers, info = split_metrics(evaluate(samples, photos, EvaluateConfig(), models=models))
            write_json(runs / subject / variant / "metrics.json", numbers.to_json())
            write_json(runs / subject / variant / "evaluation.json", info.to_json())
    return runs


def _subject_sheets(photos: Path, subject_root: Path, second_part: bool) -> None:
    """``masks/`` (files backend: the drawn masks; ``second_part``: photo 01's with a band along its top edge,
    which the self-checks flag), ``augment/`` and ``bands/sheet.png`` of the real stage functions."""
    given = photos.parent / f"{photos.name}-masks"
    shutil.copytree(photos / "masks", given)
    if second_part:
        mask = np.asarray(Image.open(given / "01.png")) > 127
        mask[: mask.shape[0] // 8, : mask.shape[1] * 3 // 5] = True
        Image.fromarray((mask * 255).astype(np.uint8)).save(given / "01.png")
    subject = discover_subject(photos, "toy")
    masks = compute_masks(subject, subject_root / "masks", MasksConfig(backend="files", files_dir=str(given)))
    augment_subject(subject, masks, subject_root / "augment", 64, AugmentConfig())
    pairs = [preprocess_target(photo, masks / f"{photo.stem}.png", 64) for photo in subject.photos]
    targets, target_masks = torch.stack([t for t, _ in pairs]), torch.stack([m for _, m in pairs])
    low, high = band_images(targets, FdteConfig())
    save_png(subject_root / "bands" / "sheet.png", band_sheet(targets, low, high, target_masks))


class _Images(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.sources: list[str] = []
        self.links: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        values = dict(attrs)
        if tag == "img":
            self.sources.append(values["src"] or "")
        if tag == "a":
            self.links.append(values["href"] or "")


def _parse(page: Path) -> _Images:
    parser = _Images()
    parser.feed(page.read_text(encoding="utf-8"))
    return parser


def test_report_writes_tables_plot_json_and_gallery(runs_dir: Path, tmp_path: Path) -> None:
    out = build_report(runs_dir, tmp_path / "report")
    summary = json.loads((out / "summary.json").read_text())
    assert json.loads((out / "report.json").read_text()) == {"calibrated": False}
    assert sorted(summary["variants"]) == list(VARIANTS)
    for variant in VARIANTS:
        for prompt_set in ("unstylized", "stylized"):
            row = summary["variants"][variant][prompt_set]
            assert row["n_subjects"] == 2
            for key in ("clip_t", "clip_i", "dino_i"):
                per_subject = [
                    json.loads((runs_dir / s / variant / "metrics.json").read_text())[prompt_set][key] for s in SUBJECTS
                ]
                assert row[key] == pytest.approx(sum(per_subject) / 2)

    table = (out / "table.md").read_text()
    assert "UNCALIBRATED (RANDOM WEIGHTS)" in table
    assert "## Average over 2 subject(s)" in table and "## toy" in table and "## can" in table
    # Table 1's layout: a row per variant, unstylized then stylized x CLIP-T, CLIP-I, DINO-I
    assert table.count("| Variant | unstylized CLIP-T | unstylized CLIP-I | unstylized DINO-I | stylized CLIP-T") == 3
    assert len(re.findall(r"^\| [AF] \|( -?\d\.\d{3} \|){6}$", table, flags=re.M)) == 3 * 2
    assert "| paper: EqDiff (Ours) | 0.782 | 0.810 | 0.670 | 0.790 | 0.755 | 0.584 |" in table
    assert table.count("| paper: ") == len(PAPER_ROWS)  # in the averaged table only

    with (out / "tradeoff.csv").open() as fh:
        points = list(csv.DictReader(fh))
    assert {(p["variant"], p["prompt_set"]) for p in points} == {
        (v, s) for v in VARIANTS for s in ("unstylized", "stylized")
    }
    # Without world metrics the world fields are null (empty cells), so dvc.yaml's world plot reads the file.
    assert {(p["world_text"], p["world_identity"]) for p in points} == {("", "")}
    tradeoff = json.loads((out / "tradeoff.json").read_text())
    assert tradeoff[0].keys() >= {"clip_t", "dino_i", "label"}
    assert {(p["world_text"], p["world_identity"]) for p in tradeoff} == {(None, None)}
    with Image.open(out / "tradeoff.png") as plot:
        assert plot.format == "PNG" and plot.width >= 400

    index = out / "index.html"
    assert "UNCALIBRATED (random weights)" in index.read_text()
    # each subject's page is linked from its samples at a glance (first) and from its table
    assert sorted(_parse(index).links) == sorted(f"gallery/{s}.html" for s in SUBJECTS for _ in ("glance", "table"))
    for subject in SUBJECTS:
        page = out / "gallery" / f"{subject}.html"
        sources = _parse(page).sources
        # 2 photos, the masks overlay, band and augment sheets, then 2 variants x 3 prompts x 1 sample.
        assert len(sources) == 2 + 3 + 2 * 3
        for src in sources:
            assert not src.startswith(("/", "file:")) and (page.parent / src).is_file(), src
        assert "a watercolor painting of a &lt;new1&gt; toy" in page.read_text()


def test_report_is_replaced_whole_and_refuses_bad_metrics(runs_dir: Path, tmp_path: Path) -> None:
    out = build_report(runs_dir, tmp_path / "report")
    before = sorted(p.relative_to(out) for p in out.rglob("*"))
    broken = tmp_path / "runs"
    shutil.copytree(runs_dir, broken)
    metrics_path = broken / "toy" / "F" / "metrics.json"
    metrics = json.loads(metrics_path.read_text())
    del metrics["stylized"]["dino_i"]
    metrics_path.write_text(json.dumps(metrics))
    with pytest.raises(DataError, match=rf"{re.escape(str(metrics_path))}: stylized.dino_i missing"):
        build_report(broken, out)
    assert sorted(p.relative_to(out) for p in out.rglob("*")) == before
    with pytest.raises(DataError, match="no <subject>/<variant>/metrics.json"):
        build_report(tmp_path / "report", tmp_path / "other")


def test_a_masks_manifest_that_is_not_one_is_named(runs_dir: Path, tmp_path: Path) -> None:
    broken = tmp_path / "runs"
    shutil.copytree(runs_dir, broken)
    manifest = broken / "can" / "masks" / "masks.json"
    manifest.write_text(json.dumps({**json.loads(manifest.read_text()), "warnings": "none"}))
    with pytest.raises(DataError, match=rf"^{re.escape(str(manifest))}: field 'warnings' missing or not a list"):
        build_report(broken, tmp_path / "report")
    assert not (tmp_path / "report").exists()
    manifest.write_text("[1, 2")
    with pytest.raises(DataError, match=rf"^{re.escape(str(manifest))}: not valid JSON \(re-run the masks stage\)"):
        build_report(broken, tmp_path / "report")


def test_dvc_reads_the_metrics(runs_dir: Path, tmp_path: Path) -> None:
    dvc = Path(sys.executable).with_name("dvc")
    if not dvc.is_file():
        pytest.skip(f"{dvc} not installed")
    out = build_report(runs_dir, tmp_path / "report")
    shutil.copy(runs_dir / "toy" / "F" / "metrics.json", tmp_path / "metrics.json")
    subprocess.run([str(dvc), "init", "--no-scm", "-q"], cwd=tmp_path, check=True)
    shown = subprocess.run(
        [str(dvc), "metrics", "show", "--json", "metrics.json", "report/summary.json"],
        cwd=tmp_path,
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    data = json.loads(shown)[""]["data"]

    def leaves(tree):
        return [v for x in tree.values() for v in (leaves(x) if isinstance(x, dict) else [x])]

    # numbers only: DVC makes a column of every leaf (strings and flags live in the sidecars)
    for path in ("metrics.json", "report/summary.json"):
        values = leaves(data[path]["data"])
        assert values and all(isinstance(v, int | float) and not isinstance(v, bool) for v in values), path
    assert data["metrics.json"]["data"]["stylized"]["dino_i"] == pytest.approx(
        json.loads((tmp_path / "metrics.json").read_text())["stylized"]["dino_i"]
    )
    assert data["report/summary.json"]["data"]["variants"]["F"]["unstylized"]["clip_t"] == pytest.approx(
        json.loads((out / "summary.json").read_text())["variants"]["F"]["unstylized"]["clip_t"]
    )


def test_evaluate_stage_default_architecture_then_report(tmp_path: Path) -> None:
    """The stage door with its default (real-size ViT-B/32 + ViT-S/16, random) models, then the report."""
    from eqdiff.stages import evaluate as evaluate_stage
    from eqdiff.stages import report as report_stage

    photos = make_sample_subject(tmp_path / "subjects" / "toy", num_photos=2)
    runs = tmp_path / "runs"
    samples = write_samples(
        runs / "toy" / "F" / "samples",
        per_prompt=1,
        templates={"unstylized": ("a {} on the beach",), "stylized": ("a sketch of a {}",)},
    )
    parser = argparse.ArgumentParser()
    evaluate_stage.add_arguments(parser)
    out = runs / "toy" / "F" / "metrics.json"
    args = parser.parse_args(["--samples", str(samples), "--subject-dir", str(photos), "--out", str(out)])
    evaluate_stage.main(args, {"evaluate": {"batch_size": 2}})
    metrics = {**json.loads(out.with_name("evaluation.json").read_text()), **json.loads(out.read_text())}
    assert set(json.loads(out.read_text())) == {"unstylized", "stylized", "n_real_images"}
    assert metrics["calibrated"] is False
    assert metrics["clip_model"] == "random-init:clip-vit-b32:seed=0"
    assert metrics["dino_model"] == "random-init:dino-vits16:seed=0"
    assert 0.0 <= metrics["stylized"]["clip_t"] <= 2.5 and -1.0 <= metrics["stylized"]["dino_i"] <= 1.0

    parser = argparse.ArgumentParser()
    report_stage.add_arguments(parser)
    report_stage.main(parser.parse_args(["--runs", str(runs), "--out", str(tmp_path / "report")]), {})
    assert (tmp_path / "report" / "gallery" / "toy.html").is_file()


class _Dom(HTMLParser):
    """What the browser test reads from a rendered page: body data, Table 1 tables, sheets, warnings, prompts."""

    def __init__(self) -> None:
        super().__init__()
        self.body: dict[str, str | None] = {}
        self.tables: dict[str, list[tuple[str, list[str]]]] = {}  # data-subject -> [(row class, cells)]
        self.headers: dict[str, list[str]] = {}
        self.sheets: list[str] = []
        self.warnings: list[str] = []
        self.checks: list[str] = []
        self.variant_headers: list[list[str]] = []
        self.prompt_rows = 0
        self._table: str | None = None
        self._kind: str | None = None
        self._row: tuple[str, list[str]] | None = None
        self._text: list[str] | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        values = dict(attrs)
        classes = (values.get("class") or "").split()
        if tag == "body":
            self.body = values
        elif tag == "table":
            self._kind = "table1" if "table1" in classes else "variants" if "variants" in classes else None
            if self._kind == "table1":
                self._table = values.get("data-subject") or ""
                self.tables[self._table], self.headers[self._table] = [], []
            elif self._kind == "variants":
                self.variant_headers.append([])
        elif tag == "tr":
            self._row = (values.get("class") or "", [])
            self.prompt_rows += "prompt" in classes
        elif tag in ("td", "th", "li") or (tag == "p" and "mask-checks" in classes):
            self._text = []
        elif tag == "img" and "sheet" in classes:
            self.sheets.append(classes[-1])

    def handle_data(self, data: str) -> None:
        if self._text is not None:
            self._text.append(data)

    def handle_endtag(self, tag: str) -> None:
        text = "".join(self._text or []).strip()
        if tag in ("td", "th") and self._row is not None and self._text is not None:
            self._row[1].append(text)
            if tag == "th" and self._kind == "table1":
                self.headers[self._table].append(text)
            if tag == "th" and self._kind == "variants":
                self.variant_headers[-1].append(text)
        elif tag == "li":
            self.warnings.append(text)
        elif tag == "p" and self._text is not None:
            self.checks.append(text)
        elif tag == "tr" and self._row is not None:
            header = not self._row[1] or self._row[1][0] in ("Variant", "CLIP-T")
            if self._kind == "table1" and not header:
                self.tables[self._table].append(self._row)
            self._row = None
        elif tag == "table":
            self._kind = self._table = None
        if tag in ("td", "th", "li", "p"):
            self._text = None


def _render(page: Path, profile: Path) -> tuple[str, _Dom]:
    result = dump_dom(page, profile)
    dom = _Dom()
    dom.feed(result.stdout)
    found = re.search(r'data-images-loaded="(\d+)/(\d+)"', result.stdout)
    assert found, f"{page.name}: no image count in the rendered DOM (chromium stderr: {result.stderr[-500:]})"
    loaded, total = int(found.group(1)), int(found.group(2))
    assert total == len(_parse(page).sources) > 0 and loaded == total, f"{page.name}: {loaded}/{total}"
    return result.stdout, dom


@pytest.mark.skipif(chromium() is None, reason="chromium not installed (CI installs it: apt-get install chromium)")
def test_gallery_renders_in_headless_chromium(runs_dir: Path, tmp_path: Path) -> None:
    """What a person sees in a browser: every image loads; the index has Table 1 tables averaged (with the
    paper's rows, marked as the paper's) and per subject, and the mask warnings; each subject page has its
    table, warnings, the masks overlay, band and augment sheets, and the variants side by side per prompt."""
    out = build_report(runs_dir, tmp_path / "report")
    profile = tmp_path / "chromium-profile"
    _, index = _render(out / "index.html", profile)
    assert sorted(index.tables) == ["", *sorted(SUBJECTS)]  # the average, then one table per subject
    layout = ["Variant", "unstylized", "stylized", *["CLIP-T", "CLIP-I", "DINO-I"] * 2]
    for name, rows in index.tables.items():
        assert index.headers[name] == layout, name
        measured = [cells for kind, cells in rows if kind != "paper"]
        assert [cells[0] for cells in measured] == list(VARIANTS)
        assert all(len(cells) == 7 and all(re.fullmatch(r"-?\d\.\d{3}", c) for c in cells[1:]) for cells in measured)
        paper = [cells for kind, cells in rows if kind == "paper"]
        assert len(paper) == (len(PAPER_ROWS) if name == "" else 0), name
    ours = next(cells for kind, cells in index.tables[""] if kind == "paper" and "Ours" in cells[0])
    assert ours == ["paper: EqDiff (Ours)", "0.782", "0.810", "0.670", "0.790", "0.755", "0.584"]
    assert any("01.png: mask has 2 sizeable separate parts" in w for w in index.warnings)
    assert "Mask self-checks: no warning." in index.checks  # toy's masks pass
    for subject in SUBJECTS:
        html, page = _render(out / "gallery" / f"{subject}.html", profile)
        assert page.body.get("data-side-by-side") == "true", subject
        assert list(page.tables) == [subject] and not [r for r in page.tables[subject] if r[0] == "paper"]
        assert sorted(page.sheets) == ["augment", "bands", "masks"]
        assert "Band sheet: target | LOW | HIGH | mask" in html
        assert page.variant_headers == [["Prompt", *VARIANTS]] * 2  # unstylized, stylized
        assert page.prompt_rows == 3
        flagged = [w for w in page.warnings if w.startswith("01.png: ")]
        assert bool(flagged) == (subject == "can"), page.warnings
        if subject == "can":
            assert any("runs along the photo's border" in w for w in flagged)


def test_report_covers_the_params_subjects_and_variants_only(runs_dir: Path, tmp_path: Path, capsys) -> None:
    """Another experiment's subject (``can``) and variant (``A``) under runs/ stay out of summary.json."""
    from support.stage_cli import run_cli

    params = tmp_path / "params.yaml"
    params.write_text("subjects: [{name: toy, dir: x, class: toy}]\nclasses: {toy: toy}\nvariants: [F]\n")
    out = tmp_path / "report"
    assert run_cli(["report", "--params", str(params), "--runs", str(runs_dir), "--out", str(out)]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert list(summary["subjects"]) == ["toy"] and list(summary["subjects"]["toy"]) == ["F"]
    assert list(summary["variants"]) == ["F"] and summary["variants"]["F"]["unstylized"]["n_subjects"] == 1
    toy_f = json.loads((runs_dir / "toy" / "F" / "metrics.json").read_text())
    assert summary["variants"]["F"]["stylized"]["dino_i"] == pytest.approx(toy_f["stylized"]["dino_i"])
    assert "can" not in (out / "table.md").read_text()

    # A subject of the params without its evaluation: one line naming the missing file, the report unchanged.
    params.write_text(
        "subjects: [{name: toy, dir: x, class: toy}, {name: cup, dir: y, class: cup}]\nclasses: {toy: toy, cup: cup}\n"
    )
    before = (out / "summary.json").read_bytes()
    assert run_cli(["report", "--params", str(params), "--runs", str(runs_dir), "--out", str(out)]) == 2
    error = capsys.readouterr().err.strip()
    missing = runs_dir / "cup" / "F" / "metrics.json"
    assert error.endswith(f"{missing}: missing; run evaluate for this subject and variant first")
    assert "\n" not in error and (out / "summary.json").read_bytes() == before
