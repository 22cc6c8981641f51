"""Sweeps and DVC experiments as users run them: the grid (product, zipped axes, a following probability) is
checked before anything runs; queued experiments (``dvc queue start -j 2``) and ``dvc exp run --temp`` leave
params.yaml alone, reuse prior and train through DVC's run-cache, keep going past a failing point, and land
in the repository's one MLflow store tagged with their experiment names (read back through mlflow's API)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from support.pipeline_copy import TINY, dvc, make_project_copy, project_env

from eqdiff.config import ConfigError
from flows.sweep import follow, grid_points, parse_grid
from tasks.experiments import check_points, override_text


def test_grid_is_a_product_of_axes_combined_with_zipped_axes():
    grid = parse_grid(["fdte.p_l=0.1,0.2", "fdte.p_o=0.8,0.7"])
    assert grid == {"fdte.p_l": [0.1, 0.2], "fdte.p_o": [0.8, 0.7]}
    assert len(grid_points(grid)) == 4 and grid_points(grid)[1] == {"fdte.p_l": 0.1, "fdte.p_o": 0.7}
    zipped = {"fdte.p_l": [0.1, 0.2], "fdte.p_o": [0.8, 0.7]}
    assert grid_points({}, zipped) == [{"fdte.p_l": 0.1, "fdte.p_o": 0.8}, {"fdte.p_l": 0.2, "fdte.p_o": 0.7}]
    assert len(grid_points({"generate.seed": [0, 1]}, zipped)) == 4
    with pytest.raises(ConfigError, match="equal lengths"):
        grid_points({}, {"fdte.p_l": [0.1, 0.2], "fdte.p_o": [0.8]})
    assert override_text("fdte.p_l", 0.2) == "fdte.p_l=0.2" and override_text("mgdp.mode", "off") == "mgdp.mode=off"


def test_a_following_probability_makes_the_three_sum_to_one():
    base = {"fdte": {"p_l": 0.1, "p_h": 0.1, "p_o": 0.8}}
    points = follow(grid_points({"fdte.p_l": [0.1, 0.2, 0.3]}), "fdte.p_o", base)
    assert [p["fdte.p_o"] for p in points] == [0.8, 0.7, 0.6]
    assert follow([{"fdte.p_o": 0.5}], "fdte.p_l", base) == [{"fdte.p_o": 0.5, "fdte.p_l": 0.4}]
    with pytest.raises(ConfigError, match="also swept"):
        follow([{"fdte.p_o": 0.5}], "fdte.p_o", base)
    with pytest.raises(ConfigError, match="expected one of"):
        follow([{}], "train.steps", base)


def test_every_point_is_checked_and_the_first_bad_one_named(tmp_path: Path):
    params_file = tmp_path / "params.yaml"
    params_file.write_text((Path(__file__).parents[2] / "params.yaml").read_text())
    base = yaml.safe_load(params_file.read_text())
    check_points(follow(grid_points({"fdte.p_l": [0.1, 0.2]}), "fdte.p_o", base), params_file)
    bad = grid_points(parse_grid(["fdte.p_l=0.1,0.2", "fdte.p_o=0.8,0.7"]))
    with pytest.raises(ConfigError, match=r"^point 1 of 4 \(fdte.p_l=0.1, fdte.p_o=0.7\): fdte.p_l: expected p_l"):
        check_points(bad, params_file)
    with pytest.raises(ConfigError, match=r"^point 0 of 1 \(train.stepz=3\): train.stepz: unknown key"):
        check_points([{"train.stepz": 3}], params_file)
    with pytest.raises(ConfigError, match=r"nosuch.key: params.yaml has no section 'nosuch'"):
        check_points([{"nosuch.key": 3}], params_file)


def test_a_relative_store_resolves_against_the_repository_not_the_experiment_workspace(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    from tasks.tracking import resolve_tracking_uri, run_tags

    workspace = tmp_path / "repo" / ".dvc" / "tmp" / "exps" / "tmp123"
    workspace.mkdir(parents=True)
    monkeypatch.chdir(workspace)
    monkeypatch.setenv("DVC_ROOT", str(tmp_path / "repo"))  # what DVC sets in an experiment workspace
    monkeypatch.setenv("DVC_EXP_NAME", "seed-1")
    assert resolve_tracking_uri("sqlite:///mlflow.db") == f"sqlite:///{tmp_path / 'repo' / 'mlflow.db'}"
    assert resolve_tracking_uri("sqlite:////abs/x.db") == "sqlite:////abs/x.db"
    assert resolve_tracking_uri("http://127.0.0.1:5000") == "http://127.0.0.1:5000"
    assert run_tags()["dvc.exp.name"] == "seed-1"
    monkeypatch.delenv("DVC_ROOT")
    assert resolve_tracking_uri("sqlite:///mlflow.db") == f"sqlite:///{workspace.resolve() / 'mlflow.db'}"


SWEEP_S = 900  # a sweep of two tiny points on a loaded 2-core box takes a few minutes


def sweep(project: Path, *args: str) -> subprocess.CompletedProcess:
    from prefect.settings import PREFECT_API_URL

    # The worker's Prefect API (the prefect_api fixture), as a user's served or started server: without it each
    # sweep would start a temporary server of its own.
    api = {"PREFECT_API_URL": PREFECT_API_URL.value()} if PREFECT_API_URL.value() else {}
    try:
        return subprocess.run(
            [sys.executable, "-m", "flows.sweep", *args],
            cwd=project,
            env={**project_env(project), **api, "PREFECT_LOGGING_LEVEL": "WARNING"},
            capture_output=True,
            text=True,
            timeout=SWEEP_S,
        )
    except subprocess.TimeoutExpired as exc:
        pytest.fail(f"sweep {' '.join(args)}: still running after {SWEEP_S} s\n{queue_report(project)}\n{exc.stderr}")


def queue_report(project: Path) -> str:
    """What a hung sweep leaves to read: ``dvc queue status`` and the tails of the queue's logs."""
    report = [dvc(project, "queue", "status", check=False).stdout]
    for log in sorted((project / ".dvc" / "tmp" / "exps").rglob("*.out")):
        report += [f"--- {log.relative_to(project)}", *log.read_text(errors="replace").splitlines()[-30:]]
    return "\n".join(report)


def mlflow_runs_by_experiment(project: Path) -> dict[str, list]:
    """DVC experiment name -> the MLflow runs tagged with it, in the repository's own store."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=f"sqlite:///{project / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("eqdiff")
    runs: dict[str, list] = {}
    for run in client.search_runs([experiment.experiment_id]):
        runs.setdefault(run.data.tags.get("dvc.exp.name"), []).append(run)
    return runs


def cached_stages(log: str) -> list[str]:
    return [line.split("'")[1] for line in log.splitlines() if "is cached - skipping run" in line]


@pytest.fixture
def experiments_project(tmp_path: Path) -> Path:
    """A tiny project copy with one prompt per set, committed (experiments start from a commit)."""
    project = make_project_copy(tmp_path / "project", {**TINY, "variants": ["F"]})  # one variant is enough here
    (project / "prompts").mkdir()
    (project / "prompts" / "unstylized.txt").write_text("a {} on a table\n")
    (project / "prompts" / "stylized.txt").write_text("a watercolor painting of a {}\n")
    params = yaml.safe_load((project / "params.yaml").read_text())
    params["prompts"] = {"unstylized": "prompts/unstylized.txt", "stylized": "prompts/stylized.txt"}
    (project / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    git = ["git", "-c", "user.name=test", "-c", "user.email=test@example.com"]
    for command in ([*git, "add", "-A"], [*git, "commit", "-qm", "one prompt per set"]):
        subprocess.run(command, cwd=project, check=True, capture_output=True)
    return project


@pytest.mark.slow
def test_queued_and_temp_experiments_share_one_store_and_the_run_cache(experiments_project: Path, prefect_api):
    project = experiments_project
    params_before = (project / "params.yaml").read_bytes()
    head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=project, capture_output=True, text=True).stdout.strip()

    # 1. An invalid grid fails before anything is queued, in one line of ours.
    bad = sweep(project, "-g", "fdte.p_l=0.1,0.2", "-g", "fdte.p_o=0.8,0.7", "--prefix", "bad")
    assert bad.returncode == 2, bad.stderr
    assert bad.stderr.strip().splitlines() == [
        "sweep: error: point 1 of 4 (fdte.p_l=0.1, fdte.p_o=0.7): fdte.p_l: expected p_l + p_h + p_o = 1 "
        "(they sum to 0.9), got 0.1"
    ]
    assert "bad-000" not in dvc(project, "queue", "status").stdout

    # 2. A --temp experiment runs every stage in a throw-away workspace, logging to the repository's store.
    dvc(project, "exp", "run", "--temp", "-n", "temp-seed1", "-S", "generate.seed=1")
    assert not (project / "runs").exists()  # the workspace was not touched

    # 3. One sweep of two zipped points, both at once through `dvc queue start -j 2`, p_o following p_l: pl-000
    #    is at the base probabilities (only generate.seed differs from temp-seed1), so it restores prior and train
    #    from the run-cache; pl-001 (p_l=0.2, so p_o=0.7) fails in prior, which does not stop the other, and the
    #    sweep names it with its stage's own error line. (That a changed p_l re-trains and nothing upstream is
    #    test_dvc_pipeline's exp-run test; a third, re-training point here would check nothing more.)
    swept = sweep(
        project, "-z", "fdte.p_l=0.1,0.2", "-z", "prior.real_images_dir=null,/nonexistent",
        "--follow", "fdte.p_o", "-j", "2", "--prefix", "pl",
    )  # fmt: skip
    assert swept.returncode == 1, swept.stderr[-3000:]
    [line] = [line for line in swept.stderr.splitlines() if line.startswith("sweep: error:")]
    assert line.startswith(
        "sweep: error: 1 of 2 point(s) failed: pl-001 (fdte.p_l=0.2, prior.real_images_dir=/nonexistent, "
    ), line
    assert "fdte.p_o=0.7" in line
    assert "eqdiff prior: error: " in line and "/nonexistent" in line and "pl-000" not in line
    log = dvc(project, "queue", "logs", "pl-000").stdout
    assert {"prior@ball", "train@subject0-F"} <= set(cached_stages(log)), log

    assert (project / "params.yaml").read_bytes() == params_before
    runs = mlflow_runs_by_experiment(project)
    for name in ("temp-seed1", "pl-000"):
        assert len(runs.get(name, [])) == 2, (name, sorted(map(str, runs)))  # the parent and demo_ball/F
        assert {run.data.tags["mlflow.source.git.commit"] for run in runs[name]} == {head}
        assert {run.data.tags["dvc.exp.baseline_rev"] for run in runs[name]} == {head}
    assert "pl-001" not in runs
    nested = next(r for r in runs["pl-000"] if "mlflow.parentRunId" in r.data.tags)
    assert (nested.data.params["fdte.p_l"], nested.data.params["fdte.p_o"]) == ("0.1", "0.8")
    assert not list((project / ".dvc" / "tmp").rglob("mlflow.db"))
    shown = dvc(project, "exp", "show", "--json").stdout
    assert all(name in shown for name in ("temp-seed1", "pl-000"))
