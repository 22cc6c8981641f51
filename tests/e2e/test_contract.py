"""The artefacts' contract (docs/architecture.md, "Artefacts and their schemas"): every stage run once through the
CLI on the tiny preset, with a prompt set named ``live`` (DreamBench's live-subject list), then each JSON
artefact read with its schema class, equal to what that class writes (the same object, the same bytes), and read
by the stage after it."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest
import torch
import yaml
from support.data import fast_params
from support.metric_models import save_small_clip, small_dino_config
from support.stage_cli import run_cli
from transformers import ViTModel

from eqdiff.config import FdteConfig, ResizeMode
from eqdiff.errors import DataError
from eqdiff.evaluation.gallery import mask_warnings
from eqdiff.evaluation.records import discover_runs
from eqdiff.evaluation.sample_index import read_sample_index
from eqdiff.io.artifacts import ArtifactError, write_json
from eqdiff.io.manifests import check_cache_inputs
from eqdiff.io.run_layout import RunLayout
from eqdiff.io.schemas.concept import ConceptManifest
from eqdiff.io.schemas.evaluation import EvaluationRecord, MetricsRecord, check_prompt_set
from eqdiff.io.schemas.fields import SchemaError
from eqdiff.io.schemas.samples import SampleImage, SampleIndex
from eqdiff.io.schemas.stage_manifests import AugmentManifest, BandsManifest, MasksManifest, PriorManifest
from eqdiff.models.concept import load_concept
from eqdiff.pipelines.generate import parse_prompt_sets
from eqdiff.prep.bands import load_band_cache
from eqdiff.prep.prior import load_class_images
from eqdiff.prep.sample import make_sample_subject
from eqdiff.prep.subjects import discover_subject

LIVE = ("a {} in a living room", "a {} on a sofa")


def _artefacts(layout: RunLayout) -> dict[str, tuple[Path, type]]:
    """Every JSON artefact of the run and its schema class."""
    return {
        "masks.json": (layout.masks("toy") / MasksManifest.FILE, MasksManifest),
        "augment.json": (layout.augment("toy") / AugmentManifest.FILE, AugmentManifest),
        "bands.json": (layout.bands("toy") / BandsManifest.FILE, BandsManifest),
        "prior.json": (layout.prior("toy") / PriorManifest.FILE, PriorManifest),
        "concept.json": (layout.concept("toy", "F") / ConceptManifest.FILE, ConceptManifest),
        "index.json": (layout.samples("toy", "F") / SampleIndex.FILE, SampleIndex),
        "metrics.json": (layout.metrics("toy", "F"), MetricsRecord),
        "evaluation.json": (layout.evaluation("toy", "F"), EvaluationRecord),
    }


def add_mac_leftovers(folder: Path) -> None:
    """What a folder copied from a Mac holds beside the photos (AppleDouble ``._*``, ``.DS_Store``) and what Jupyter
    leaves: every stage must skip them (docs/robustness.md, "Hidden files")."""
    (folder / "._00.png").write_bytes(b"\x00\x05\x16\x07" + bytes(80))  # AppleDouble header, not a PNG
    (folder / ".DS_Store").write_bytes(b"\x00\x00\x00\x01Bud1" + bytes(64))
    (folder / ".ipynb_checkpoints").mkdir()
    (folder / ".ipynb_checkpoints" / "00-checkpoint.png").write_bytes((folder / "00.png").read_bytes())


@pytest.fixture(scope="module")
def pipeline(tmp_path_factory: pytest.TempPathFactory) -> tuple[RunLayout, Path]:
    """On a subject folder (and masks folder) with a Mac's and Jupyter's hidden files: ``masks`` (files backend) ->
    ``augment`` -> ``bands`` -> ``prior`` -> ``train`` (3 steps) -> ``generate``
    (the prompt set ``live`` only) -> ``evaluate`` (small CLIP / DINO from directories) -> ``report``."""
    root = tmp_path_factory.mktemp("contract")
    subject = make_sample_subject(root / "toy", num_photos=3)
    add_mac_leftovers(subject)
    add_mac_leftovers(subject / "masks")
    clip = save_small_clip(root / "models" / "clip")
    torch.manual_seed(2)
    ViTModel(small_dino_config(), add_pooling_layer=False).save_pretrained(root / "models" / "dino")
    params = root / "params.yaml"
    values = fast_params(
        masks={"backend": "files", "files_dir": str(subject / "masks")},
        evaluate={"clip_model": str(clip), "dino_model": str(root / "models" / "dino")},
    )
    params.write_text(yaml.safe_dump(values))
    (root / "live.txt").write_text("\n".join(LIVE) + "\n")
    layout = RunLayout(root / "runs")
    masks, augment, bands, prior = layout.masks("toy"), layout.augment("toy"), layout.bands("toy"), layout.prior("toy")
    concept, samples = layout.concept("toy", "F"), layout.samples("toy", "F")
    subject_args = ["--subject-dir", str(subject)]
    stages = [
        ["masks", *subject_args, "--class-noun", "toy", "--out", str(masks)],
        ["augment", *subject_args, "--masks", str(masks), "--out", str(augment)],
        ["bands", *subject_args, "--masks", str(masks), "--out", str(bands)],
        ["prior", "--class-noun", "toy", "--out", str(prior)],
        ["train", *subject_args, "--class-noun", "toy", "--out", str(concept), "--device", "cpu"]
        + ["--masks", str(masks), "--augment", str(augment), "--bands", str(bands), "--prior", str(prior)],
        ["generate", "--concept", str(concept), "--out", str(samples), "--prompts", f"live={root / 'live.txt'}"]
        + ["--device", "cpu"],
        ["evaluate", "--samples", str(samples), *subject_args, "--out", str(layout.metrics("toy", "F"))],
        ["report", "--runs", str(layout.runs), "--out", str(root / "report")],
    ]
    for argv in stages:
        assert run_cli([argv[0], "--params", str(params), *argv[1:]]) == 0, argv[0]
    return layout, subject


@pytest.mark.parametrize("name", list(_artefacts(RunLayout(Path("runs")))))
def test_every_artefact_is_what_its_schema_writes(pipeline, name: str, tmp_path: Path) -> None:
    path, schema = _artefacts(pipeline[0])[name]
    artefact = schema.read(path)
    assert schema.from_json(artefact.to_json(), path) == artefact
    assert json.loads(path.read_text()) == artefact.to_json()  # the same keys, values and nesting
    write_json(tmp_path / name, artefact.to_json())
    assert (tmp_path / name).read_bytes() == path.read_bytes()


def test_each_stage_reads_what_the_stage_before_wrote(pipeline) -> None:
    layout, subject_dir = pipeline
    subject = discover_subject(subject_dir, "toy")
    concept = load_concept(layout.concept("toy", "F"))
    assert concept.manifest.steps == 3 and concept.manifest.subject == "toy"
    for cache, schema in ((layout.bands("toy"), BandsManifest), (layout.augment("toy"), AugmentManifest)):
        check_cache_inputs(cache, schema, subject, layout.masks("toy"))
    fingerprint = concept.manifest.base_model_fingerprint
    bands = load_band_cache(layout.bands("toy"), fingerprint, 32, FdteConfig(), ResizeMode.CROP)
    assert bands["stems"] == ["00", "01", "02"]
    assert len(load_class_images(layout.prior("toy"), 2)) == 2

    index = read_sample_index(layout.samples("toy", "F"))
    assert index.prompt_sets == ("live",) and [im.template for im in index.images] == list(LIVE)
    assert index.placeholder == concept.placeholder and all(path.is_file() for path in index.paths)

    (run,) = discover_runs(layout.runs)
    assert list(run.metrics.sets) == ["live"] and run.metrics.sets["live"].n_images == len(index.images)
    assert list(run.evaluation.per_prompt) == ["live"] and run.evaluation.subject_dir == str(subject_dir)
    assert mask_warnings(run) == list(MasksManifest.read(layout.masks("toy") / MasksManifest.FILE).warnings)


def test_the_report_shows_a_prompt_set_of_any_name(pipeline) -> None:
    report = pipeline[0].runs.parent / "report"
    summary = json.loads((report / "summary.json").read_text())
    assert list(summary["variants"]["F"]) == ["live"] and summary["variants"]["F"]["live"]["n_subjects"] == 1
    table = (report / "table.md").read_text()
    # Table 1's two column groups stay (dashes: not sampled), the live set comes after them.
    assert "| stylized DINO-I | live CLIP-T | live CLIP-I | live DINO-I |" in table
    assert re.search(r"^\| F \|( — \|){6}( -?\d\.\d{3} \|){3}$", table, flags=re.M), table
    assert {p["prompt_set"] for p in json.loads((report / "tradeoff.json").read_text())} == {"live"}
    assert 'data-prompt-set="live"' in (report / "gallery" / "toy.html").read_text()


@pytest.mark.parametrize("name", ["live", "unstylized", "a", "Set-2_b", "x" * 64, "subject", "n_real_images"])
def test_any_folder_name_round_trips_as_a_prompt_set(name: str, tmp_path: Path) -> None:
    image = SampleImage(f"{name}/000_00.png", "a <new1> toy", "a {}", name, 0, 0, 0)
    index = SampleIndex(tmp_path, "toy", "toy", "<new1>", "F", False, (image,))
    assert SampleIndex.from_json(index.to_json(), tmp_path / SampleIndex.FILE) == index


@pytest.mark.parametrize("name", ["", "../x", "a.b", "x" * 65, "a/b", 7])
def test_a_prompt_set_that_is_no_folder_name_is_refused_naming_the_field(name, tmp_path: Path) -> None:
    image = {"file": "x/000_00.png", "prompt": "p", "template": "t", "prompt_set": name}
    data = {"subject": "toy", "class_noun": "toy", "placeholder": "<new1>", "variant": "F", "calibrated": False}
    data["images"] = [{**image, "prompt_index": 0, "sample_index": 0, "seed": 0}]
    with pytest.raises(ArtifactError, match=re.escape(f"{tmp_path / 'index.json'}: images[0].prompt_set")):
        SampleIndex.from_json(data, tmp_path / "index.json")


def test_a_prompt_set_named_like_a_metrics_field_is_refused_before_sampling() -> None:
    with pytest.raises(SchemaError, match="'subject': the name of a field of metrics.json or evaluation.json"):
        parse_prompt_sets(["subject=prompts.txt"])
    with pytest.raises(SchemaError, match="'n_real_images'"):
        check_prompt_set("n_real_images", "prompt set")
    assert parse_prompt_sets(["live=live.txt"]) == {"live": Path("live.txt")}


@pytest.mark.parametrize(
    ("name", "edit", "field"),
    [
        ("masks.json", lambda d: d["photos"]["01"].pop("backend"), "photos.01.backend"),
        ("bands.json", lambda d: d.pop("fingerprint"), "field 'fingerprint'"),
        ("concept.json", lambda d: d.pop("placeholder"), "field 'placeholder'"),
        ("index.json", lambda d: d["images"][1].pop("seed"), "images[1].seed"),
        ("metrics.json", lambda d: d["live"].pop("dino_i"), "live.dino_i"),
        ("evaluation.json", lambda d: d["per_prompt"]["live"][0].pop("text"), "per_prompt.live[0].text"),
    ],
)
def test_a_missing_field_is_one_line_naming_the_file_and_the_field(pipeline, name, edit, field, tmp_path) -> None:
    path, schema = _artefacts(pipeline[0])[name]
    data = json.loads(path.read_text())
    edit(data)
    where = path.parent / f"edited-{name}"
    with pytest.raises(SchemaError, match=f"^{re.escape(f'{where}: {field} missing or not a ')}"):
        schema.from_json(data, where)


def test_the_report_names_a_metrics_file_without_a_prompt_set(pipeline, tmp_path: Path) -> None:
    path = tmp_path / "toy" / "F" / "metrics.json"
    write_json(path, {"n_real_images": 3})
    shutil.copy(pipeline[0].evaluation("toy", "F"), path.with_name(EvaluationRecord.FILE))
    with pytest.raises(DataError, match=re.escape(f"{path}: has no prompt-set block")):
        discover_runs(tmp_path)
