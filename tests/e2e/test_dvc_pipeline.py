"""The DVC pipeline: every param is read by a stage, stages list the right params, a real ``dvc repro`` of
the demo (the world preset at a few steps) is stable, ``dvc exp run`` re-runs only what a change touches, and
the ``customize`` flow writes the same artefacts as the DVC path. (It is also the world preset's end-to-end test.)"""

from __future__ import annotations

import dataclasses
import json
import re
import shutil
from pathlib import Path

import pytest
import yaml
from support.browser import chromium, dump_dom
from support.pipeline_copy import REPO, TINY, dvc, make_project_copy, ran_stages

from eqdiff.config import METHOD_SECTIONS, AugmentConfig, EvaluateConfig, MasksConfig, OrchestrationConfig, PriorConfig

SECTIONS = {
    **METHOD_SECTIONS,
    **{c.SECTION: c for c in (MasksConfig, AugmentConfig, PriorConfig, EvaluateConfig, OrchestrationConfig)},
}
TEMPLATE_KEYS = ("subjects", "classes", "variants", "prompts")  # read by dvc.yaml's foreach/matrix/cmd


def load(name: str) -> dict:
    return yaml.safe_load((REPO / name).read_text())


def stage_params(dvc_yaml: dict) -> dict[str, list[str]]:
    stages = {}
    for name, stage in dvc_yaml["stages"].items():
        body = stage.get("do", stage)
        stages[name] = [p for p in body.get("params", []) if isinstance(p, str)]
    return stages


def test_every_params_key_is_read_and_every_listed_param_exists():
    params, pipeline = load("params.yaml"), load("dvc.yaml")
    listed = {p for names in stage_params(pipeline).values() for p in names}
    text = (REPO / "dvc.yaml").read_text()
    flows_source = "\n".join(p.read_text() for p in (REPO / "flows").glob("*.py"))
    for key in TEMPLATE_KEYS:
        assert "${" + key in text, f"top-level {key!r} is not used by dvc.yaml"
    for section, values in params.items():
        if section in TEMPLATE_KEYS:
            continue
        assert section in SECTIONS, f"params.yaml section {section!r} has no config dataclass"
        fields = {f.name for f in dataclasses.fields(SECTIONS[section])}
        for key in values:
            assert key in fields, f"params.yaml {section}.{key} is not a field of {SECTIONS[section].__name__}"
            read_by_dvc = section in listed or f"{section}.{key}" in listed
            read_by_flows = section == "orchestration" and f"config.{key}" in flows_source
            assert read_by_dvc or read_by_flows, f"params.yaml {section}.{key} is read by no stage"
    for name in listed:
        section, _, key = name.partition(".")
        assert section in params, f"dvc.yaml lists {name!r}, which params.yaml lacks"
        if key and section not in TEMPLATE_KEYS:
            assert key in {f.name for f in dataclasses.fields(SECTIONS[section])}, f"dvc.yaml lists unknown {name!r}"


def test_stages_list_only_the_params_that_change_their_outputs():
    stages = stage_params(load("dvc.yaml"))
    # p_l/p_o are train's: a sweep of them must not recompute bands; cutoffs are bands' (and train's).
    assert not {p for p in stages["bands"] if p in ("fdte", "fdte.p_l", "fdte.p_h", "fdte.p_o")}
    assert "fdte.cutoff_low" in stages["bands"] and "fdte" in stages["train"]
    for upstream in ("sample", "masks", "augment", "prior"):
        assert not [p for p in stages[upstream] if p.startswith("fdte")], upstream
    for name, names in stages.items():
        assert name == "track" or not [p for p in names if p.startswith("orchestration")], name


def test_default_params_are_the_embedded_demo():
    params = load("params.yaml")
    assert params["model"]["preset"] == "world" and params["variants"] == ["A", "F"]
    assert [s["dir"] for s in params["subjects"]] == ["data/subjects/demo_ball"]
    assert "../" not in json.dumps(params["subjects"]) + json.dumps(params["prompts"])
    sample = load("dvc.yaml")["stages"]["sample"]
    assert sample["outs"] == ["data/subjects/demo_ball"]
    from eqdiff.cli import build_stage_parser
    from tasks.spec import DEMO_SUBJECT, DEMO_SUBJECT_DIR

    assert str(DEMO_SUBJECT_DIR) == "data/subjects/demo_ball"
    # the flows draw the demo subject with the very arguments of dvc.yaml's command
    args = build_stage_parser("sample").parse_args(sample["cmd"].split()[2:])
    assert (args.out, {key: getattr(args, key) for key in DEMO_SUBJECT}) == (DEMO_SUBJECT_DIR, DEMO_SUBJECT)


def test_fresh_copy_plans_every_stage(tmp_path: Path):
    project = make_project_copy(tmp_path / "project", TINY)
    names = dvc(project, "stage", "list", "--name-only").stdout.split()
    assert names == [
        "check-models",
        "sample",
        "masks@0",
        "augment@0",
        "bands@0",
        "prior@ball",
        "train@subject0-A",
        "train@subject0-F",
        "generate@subject0-A",
        "generate@subject0-F",
        "evaluate@subject0-A",
        "evaluate@subject0-F",
        "report",
        "track",
    ]


# The demo subject with a two-word class noun, as DreamBooth's bear_plushie ("stuffed animal"): it must reach
# every stage's command and path intact.
TWO_WORD_CLASS = {
    "subjects": [{"name": "demo_ball", "dir": "data/subjects/demo_ball", "class": "stuffed-animal"}],
    "classes": {"stuffed-animal": "stuffed animal"},
}


# The embedded demo as `dvc repro` runs it, on its own preset (the world model) and variants (the baseline A beside
# the method F) at the tiny settings' few steps, class images and views, at the world model's native resolution.
WORLD_DEMO = {**TINY, "model": {"preset": "world"}, "train": {**TINY["train"], "resolution": 64}}


@pytest.fixture(scope="module")
def demo_project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The demo on the world preset at a few steps, its subject a "stuffed animal", reproduced once with DVC. Its
    report as `dvc repro` left it is kept beside it (``reports-after-repro``): later tests change the workspace."""
    project = make_project_copy(tmp_path_factory.mktemp("dvc") / "project", {**WORLD_DEMO, **TWO_WORD_CLASS})
    dvc(project, "repro")
    shutil.copytree(project / "reports", project.parent / "reports-after-repro")
    return project


def concept_bytes(runs: Path) -> bytes:
    return (runs / "demo_ball" / "F" / "concept" / "concept.safetensors").read_bytes()


def relative_files(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*") if p.is_file()}


@pytest.mark.slow
def test_dvc_demo_produces_every_artefact_and_is_stable(demo_project: Path):
    runs = demo_project / "runs" / "demo_ball"
    for path in ("masks/overlay.png", "bands/sheet.png", "F/concept/concept.json", "F/samples/grid.png"):
        assert (runs / path).is_file(), path
    assert json.loads((runs / "A" / "concept" / "concept.json").read_text())["config"]["train"]["variant"] == "A"
    assert json.loads((runs / "F" / "evaluation.json").read_text())["calibrated"] is False
    # The noun reached the prompts whole; its slug named the prior.
    assert json.loads((runs / "F" / "concept" / "concept.json").read_text())["class_noun"] == "stuffed animal"
    assert (demo_project / "runs" / "prior" / "stuffed-animal" / "prior.json").is_file()
    assert (runs / "F" / "losses.jsonl").read_text().count("\n") == TINY["train"]["steps"]
    assert (demo_project / "reports" / "index.html").is_file()
    # The held-out ball was drawn with its exact masks (the files backend read them), and the report carries the
    # world metrics.
    assert json.loads((runs / "masks" / "masks.json").read_text())
    summary = (demo_project / "reports" / "summary.json").read_text()
    assert "world_text" in summary and "world_identity" in summary, summary
    assert (demo_project / "reports" / "tradeoff.png").is_file()
    # `dvc plots show` draws both trade-off plots from the report's points, the world one with numbers.
    plots = json.loads(dvc(demo_project, "plots", "show", "--json").stdout)
    assert "errors" not in plots and set(plots["data"]) == {"World-T vs World-I", "CLIP-T vs DINO-I"}, plots
    points = plots["data"]["World-T vs World-I"][0]["content"]["data"]["values"]
    assert {p["prompt_set"] for p in points} == {"unstylized", "stylized"}
    assert all(isinstance(p["world_identity"], float) for p in points)
    tracked = json.loads((demo_project / "tracking" / "mlflow_run.json").read_text())
    assert list(tracked["runs"]) == ["demo_ball/A", "demo_ball/F"] and (demo_project / "mlflow.db").is_file()
    assert "up to date" in dvc(demo_project, "status").stdout
    assert ran_stages(dvc(demo_project, "repro").stdout) == []


@pytest.mark.slow
def test_customize_flow_writes_what_dvc_writes(demo_project: Path, monkeypatch: pytest.MonkeyPatch, prefect_api):
    from flows.customize import customize

    monkeypatch.chdir(demo_project)
    result = customize("params.yaml", runs_dir="flow_runs", reports_dir="flow_reports")
    assert set(result["runs"]) == {"demo_ball/A", "demo_ball/F"}
    dvc_runs, flow_runs = demo_project / "runs", demo_project / "flow_runs"
    ignore = re.compile(r"(^|/)\.|concept-work/|prior-work/")  # lock files; DVC's scratch of resumable stages
    same = {f for f in relative_files(dvc_runs) if not ignore.search(f)}
    assert same == {f for f in relative_files(flow_runs) if not ignore.search(f)}
    assert concept_bytes(flow_runs) == concept_bytes(dvc_runs)
    assert relative_files(demo_project / "reports") == relative_files(demo_project / "flow_reports")


@pytest.mark.slow
def test_exp_run_of_band_probabilities_reruns_train_onwards_only(demo_project: Path):
    # F alone (`variants` is a param like any other): what a changed band probability re-runs is one chain's story.
    overrides = ["-S", "fdte.p_l=0.2", "-S", "fdte.p_o=0.7", "-S", "variants=[F]"]
    output = dvc(demo_project, "exp", "run", *overrides).stdout
    ran = ran_stages(output)
    # Downstream stages whose inputs come out byte-identical are skipped (2 tiny steps may not move a pixel).
    downstream = ["train@subject0-F", "generate@subject0-F", "evaluate@subject0-F", "report", "track"]
    assert ran[0] == "train@subject0-F" and set(ran) <= set(downstream), ran
    assert "track" in ran  # the parent MLflow run of this invocation
    # A cutoff change touches bands (and train, which reads all of fdte) and nothing upstream of bands.
    params_file = demo_project / "params.yaml"
    params = yaml.safe_load(params_file.read_text())
    params["fdte"]["cutoff_low"] = 40.0
    params_file.write_text(yaml.safe_dump(params, sort_keys=False))
    changed = json.loads(dvc(demo_project, "status", "--json").stdout)
    # track logs every section; it runs last anyway.
    assert sorted(changed) == ["bands@0", "track", "train@subject0-F"]


@pytest.mark.slow
@pytest.mark.skipif(chromium() is None, reason="chromium not installed (CI installs it: apt-get install chromium)")
def test_mlflow_ui_as_the_readme_says_shows_the_demos_runs(demo_project: Path, tmp_path: Path):
    """README, "MLflow": `mlflow ui --backend-store-uri sqlite:///mlflow.db --workers 1`, then the runs table at
    http://127.0.0.1:5000/#/experiments/1/runs: headless Chromium finds the experiment on the home page and the
    demo's pipeline runs (their nested runs folded under them) in that table."""
    import subprocess

    from mlflow.tracking import MlflowClient
    from support.pipeline_copy import BIN, project_env
    from support.servers import free_port, stop, wait_healthy

    client = MlflowClient(tracking_uri=f"sqlite:///{demo_project / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("eqdiff")
    # the table lists the parent runs (the demo's `dvc repro` and whatever this file's other tests ran on the same
    # project), each with its nested runs folded under it
    runs = client.search_runs([experiment.experiment_id])
    names = [run.info.run_name for run in runs if "mlflow.parentRunId" not in run.data.tags]
    assert any(name.startswith("pipeline-dvc-") for name in names), names
    port, log = free_port(), tmp_path / "mlflow-ui.log"
    command = [BIN / "mlflow", "ui", "--backend-store-uri", "sqlite:///mlflow.db", "--workers", "1"]
    command += ["--port", str(port)]
    with log.open("w") as out:
        server = subprocess.Popen(
            command, cwd=demo_project, env=project_env(demo_project), stdout=out, stderr=subprocess.STDOUT,
            start_new_session=True,
        )  # fmt: skip
    try:
        home = f"http://127.0.0.1:{port}"
        wait_healthy(f"{home}/health", server, log, 240)
        link = f"#/experiments/{experiment.experiment_id}"
        shown = dump_dom(home, tmp_path / "profile", virtual_time_ms=20000).stdout
        assert link in shown, "the home page does not list the eqdiff experiment"
        logged = (demo_project / "tracking" / "mlflow_run.json").read_text()
        assert experiment.experiment_id == "1" and "eqdiff" in logged  # the README's address names experiment 1
        page = dump_dom(f"{home}/{link}/runs", tmp_path / "profile", virtual_time_ms=20000).stdout
        missing = [name for name in names if name not in page]
        assert not missing, f"the experiment page does not show the runs {missing}:\n{page[-3000:]}"
    finally:
        stop(server)


@pytest.mark.skipif(chromium() is None, reason="chromium not installed (CI installs it: apt-get install chromium)")
def test_the_reports_first_screen_shows_the_baseline_beside_the_method(demo_project: Path, tmp_path: Path):
    """`reports/index.html` opened in a laptop's window (1280 x 800): the first sample of A and of F side by side
    on its first screen, each variant headed by its leaks and world numbers, every image loaded."""
    index = demo_project.parent / "reports-after-repro" / "index.html"
    dom = dump_dom(index, tmp_path / "profile", window=(1280, 800)).stdout
    assert 'data-first-screen="A,F"' in dom, dom[:3000]
    loaded = re.search(r'data-images-loaded="(\d+)/(\d+)"', dom)
    assert loaded and loaded.group(1) == loaded.group(2) != "0", loaded
    headers = re.findall(r'<th data-variant="([AF])">\1<div class="numbers">([^<]*)</div>', dom)
    assert [variant for variant, _ in headers] == ["A", "F"], headers
    assert all("Style leak" in numbers and "World-I" in numbers for _, numbers in headers), headers
