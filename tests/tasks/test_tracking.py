"""MLflow tracking read back through mlflow's own client: parent runs carry the shared params and the averaged
metrics, run names are unique and readable, losses keep their training steps and wall times."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from support.data import fast_params
from support.evaluations import write_evaluation

SUBJECTS = {"toy": {"A": 0.50, "F": 0.70}, "can": {"A": 0.30, "F": 0.60}}  # unstylized CLIP-T of each run


@pytest.fixture
def tracked(tmp_path: Path, subject_dir: Path) -> tuple[dict, Path]:
    """Params of 2 subjects x variants A, F; toy/F really trained (its losses.jsonl), every run evaluated."""
    from eqdiff.stages.train import run as train_concept

    runs = tmp_path / "runs"
    params = fast_params(train={"steps": 3, "with_prior_preservation": False})
    train_concept(
        subject_dir, "toy", runs / "toy" / "F" / "concept", params, losses=runs / "toy" / "F" / "losses.jsonl"
    )
    for subject, variants in SUBJECTS.items():
        for variant, clip_t in variants.items():
            write_evaluation(runs / subject / variant, subject_dir, clip_t, ("unstylized", "stylized"))
    params.update(
        subjects=[{"name": name, "dir": str(subject_dir), "class": "toy"} for name in SUBJECTS],
        classes={"toy": "toy"},
        variants=["A", "F"],
        orchestration={"tracking_uri": f"sqlite:///{tmp_path / 'mlflow.db'}", "experiment": "tracking-test"},
    )
    return params, runs


def test_parent_runs_names_and_loss_timestamps_read_back(tracked: tuple[dict, Path]):
    from mlflow.tracking import MlflowClient

    from tasks.tracking import log_pipeline

    params, runs = tracked
    first, second = log_pipeline(params, runs), log_pipeline(params, runs)
    client = MlflowClient(tracking_uri=first["tracking_uri"])

    parent = client.get_run(first["parent_run_id"])
    # Params every nested run shares, and which subjects and variants ran; not the variant-dependent ones.
    assert parent.data.params["fdte.p_l"] == "0.1" and parent.data.params["train.steps"] == "3"
    assert parent.data.params["pipeline.subjects"] == "toy,can"
    assert parent.data.params["pipeline.variants"] == "A,F"
    assert "train.variant" not in parent.data.params and "fdte.enabled" not in parent.data.params
    # Per variant, averaged over the subjects (the report's macro average).
    for variant in ("A", "F"):
        mean = sum(SUBJECTS[s][variant] for s in SUBJECTS) / len(SUBJECTS)
        assert parent.data.metrics[f"{variant}/unstylized/clip_t"] == pytest.approx(mean)
        assert parent.data.metrics[f"{variant}/stylized/dino_i"] == pytest.approx(mean / 4)

    # Every name unique across both invocations; a nested run's name says its subject, variant and invocation.
    experiment = client.get_experiment_by_name("tracking-test")
    names = [run.info.run_name for run in client.search_runs([experiment.experiment_id])]
    assert len(names) == 2 * (1 + 4) and len(set(names)) == len(names)
    parent_name = parent.info.run_name
    assert parent_name.startswith("pipeline-dvc-")
    assert client.get_run(first["runs"]["toy/F"]).info.run_name == f"toy/F-{parent_name.removeprefix('pipeline-dvc-')}"
    assert client.get_run(second["parent_run_id"]).info.run_name != parent_name

    # Losses at their training steps and at the wall times training recorded (not one tracking-time stamp).
    records = [json.loads(line) for line in (runs / "toy" / "F" / "losses.jsonl").read_text().splitlines()]
    history = sorted(client.get_metric_history(first["runs"]["toy/F"], "loss/total"), key=lambda m: m.step)
    assert [m.step for m in history] == [1, 2, 3]
    assert [m.timestamp for m in history] == [int(r["time"] * 1000) for r in records]
    assert len({m.timestamp for m in history}) == 3
    assert [m.value for m in history] == pytest.approx([r["loss/total"] for r in records])
    assert "time" not in client.get_run(first["runs"]["toy/F"]).data.metrics


def test_runs_carry_the_times_of_their_work_and_the_experiment_opens_on_its_runs(tracked: tuple[dict, Path]):
    """A run's start and end are when its stages wrote their outputs (the first training step to the evaluation),
    not the moment the tracking stage logged it; the experiment is tagged as model training, so MLflow 3's UI
    opens it on the runs table."""
    import os
    import time

    from mlflow.tracking import MlflowClient

    from tasks.tracking import EXPERIMENT_KIND, log_pipeline

    params, runs = tracked
    hour_ago = time.time() - 3600
    for path in runs.rglob("*"):  # the work happened an hour before it is tracked
        if path.is_file():
            os.utime(path, (hour_ago, hour_ago))
    logged = log_pipeline(params, runs)
    client = MlflowClient(tracking_uri=logged["tracking_uri"])
    records = [json.loads(line) for line in (runs / "toy" / "F" / "losses.jsonl").read_text().splitlines()]
    nested = client.get_run(logged["runs"]["toy/F"]).info
    assert abs(nested.start_time - min(min(r["time"] for r in records), hour_ago) * 1000) <= 1
    assert abs(nested.end_time - hour_ago * 1000) <= 1
    parent = client.get_run(logged["parent_run_id"]).info
    assert parent.start_time <= nested.start_time and abs(parent.end_time - hour_ago * 1000) <= 1
    assert parent.end_time < time.time() * 1000 - 3000 * 1000  # not the tracking stage's own time
    experiment = client.get_experiment_by_name("tracking-test")
    assert experiment.tags[EXPERIMENT_KIND[0]] == EXPERIMENT_KIND[1] == "custom_model_development"
