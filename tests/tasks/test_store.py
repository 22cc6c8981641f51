"""The store the flows hand their tasks (tasks/store.py): absolute paths only, inputs copied in once, a relative
store refused; the run-folder layout rooted there (eqdiff/io/run_layout.py)."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from support.pipeline_copy import REPO

from eqdiff.config import ConfigError, OrchestrationConfig
from eqdiff.errors import DataError
from eqdiff.io.run_layout import RunLayout
from eqdiff.prep.sample import make_sample_subject
from tasks.spec import SubjectSpec
from tasks.store import stage_inputs, stage_subject


def test_layout_resolves_a_relative_runs_folder_against_the_store(tmp_path: Path):
    layout = RunLayout.under(tmp_path / "store")
    assert layout.concept_work("dog", "F") == tmp_path / "store" / "runs" / "dog" / "F" / "concept-work"
    assert layout.prior("stuffed animal") == tmp_path / "store" / "runs" / "prior" / "stuffed-animal"
    assert RunLayout.under(tmp_path / "store", tmp_path / "elsewhere").runs == tmp_path / "elsewhere"


def test_a_relative_store_is_refused_in_one_line():
    with pytest.raises(ConfigError, match=r"orchestration.store: expected an absolute path or null, got 'shared'"):
        OrchestrationConfig(store="shared")


def test_inputs_are_copied_into_the_store_once_and_again_when_they_change(tmp_path: Path):
    photos = make_sample_subject(tmp_path / "checkout" / "data" / "toy", 2)
    prompts = tmp_path / "checkout" / "live.txt"
    prompts.write_text("a photo of {}\n")
    store = tmp_path / "store"
    subject = SubjectSpec("toy_a", photos, "toy", "toy")

    [staged], prompt_sets = stage_inputs([subject], {"unstylized": prompts}, store)
    assert staged.dir == store / "inputs" / "subjects" / "toy_a" / "toy"  # the folder keeps its name
    assert sorted(p.name for p in staged.dir.iterdir()) == sorted(p.name for p in photos.iterdir())
    assert (staged.dir / "00.png").read_bytes() == (photos / "00.png").read_bytes()
    assert prompt_sets["unstylized"] == store / "inputs" / "prompts" / "unstylized" / "live.txt"

    before = (staged.dir / "00.png").stat().st_ino  # copy2 keeps times: a new copy is a new inode
    assert stage_subject(subject, store).dir == staged.dir
    assert (staged.dir / "00.png").stat().st_ino == before  # up to date: not copied again

    (photos / "00.png").write_bytes((photos / "01.png").read_bytes())  # the user replaced a photo
    stage_subject(subject, store)
    assert (staged.dir / "00.png").read_bytes() == (photos / "01.png").read_bytes()


def test_an_input_already_in_the_store_is_used_where_it_is(tmp_path: Path):
    photos = make_sample_subject(tmp_path / "store" / "photos" / "toy", 2)
    staged = stage_subject(SubjectSpec("toy", photos, "toy", "toy"), tmp_path / "store")
    assert staged.dir == photos and not (tmp_path / "store" / "inputs").exists()


def test_a_missing_input_fails_before_anything_is_copied(tmp_path: Path):
    with pytest.raises(DataError, match=r"nope: subject folder not found"):
        stage_subject(SubjectSpec("toy", tmp_path / "nope", "toy", "toy"), tmp_path / "store")
    assert not (tmp_path / "store").exists()


def test_the_flow_plan_hands_tasks_absolute_paths_in_the_store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    from flows.common import read_plan

    params = yaml.safe_load((REPO / "params.yaml").read_text())
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    make_sample_subject(tmp_path / "data" / "subjects" / "demo_ball", 2)
    (tmp_path / "eqdiff" / "prompt_lists").mkdir(parents=True)
    for name in ("world_unstylized", "world_stylized"):
        (tmp_path / "eqdiff" / "prompt_lists" / f"{name}.txt").write_text("a photo of {}\n")
    monkeypatch.chdir(tmp_path)
    store = tmp_path / "shared"

    local = read_plan("params.yaml", [], "runs")
    assert local.layout.runs == tmp_path / "runs" and local.reports == tmp_path / "reports"
    assert local.subjects[0].dir == tmp_path / "data" / "subjects" / "demo_ball"
    assert local.staged() is local  # no store: nothing copied

    plan = read_plan("params.yaml", [f"orchestration.store={store}"], "runs").staged()
    assert plan.layout.runs == store / "runs" and plan.reports == store / "reports"
    assert plan.subjects[0].dir == store / "inputs" / "subjects" / "demo_ball" / "demo_ball"
    assert all(store in path.parents for path in plan.prompt_sets.values())
