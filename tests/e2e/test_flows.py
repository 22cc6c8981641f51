"""Prefect flows on tiny real models: the benchmark fanned out over variants on a 2-worker local Dask cluster
with nested MLflow runs (the fan-out over subjects, on separate workers, is test_cluster.py's), a failing stage
that fails its flow with the stage's one line and resumes once fixed, the served deployment's schedule and the
sweep grid."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from support.flow_params import write_params
from support.pipeline_copy import REPO

from eqdiff.prep.sample import make_sample_subject


def task_runs_and_logs(flow_run_id) -> tuple[list[str], list[str]]:
    """Names of the task runs of a flow run and of its subflow runs (benchmark-runs), and their log lines."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import (
        FlowRunFilter,
        FlowRunFilterId,
        FlowRunFilterParentFlowRunId,
        LogFilter,
        LogFilterFlowRunId,
    )
    from prefect.logging.handlers import APILogWorker

    APILogWorker.drain_all(timeout=30)
    with get_client(sync_client=True) as client:
        children = client.read_flow_runs(
            flow_run_filter=FlowRunFilter(parent_flow_run_id=FlowRunFilterParentFlowRunId(any_=[flow_run_id]))
        )
        ids = [flow_run_id, *(child.id for child in children)]
        task_runs = client.read_task_runs(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=ids)))
        logs = client.read_logs(log_filter=LogFilter(flow_run_id=LogFilterFlowRunId(any_=ids)))
    names = [run.name for run in task_runs if not run.name.startswith("benchmark-runs")]
    return names, [log.message for log in logs]


@pytest.mark.slow
def test_benchmark_fans_out_variants_with_nested_mlflow_runs(tmp_path: Path, prefect_api):
    from mlflow.tracking import MlflowClient

    from flows.benchmark import benchmark

    subjects = [
        {"name": name, "dir": str(make_sample_subject(tmp_path / "subjects" / name, 2, seed=seed)), "class_noun": "toy"}
        for seed, name in enumerate(("toy_a",))
    ]
    params_file = write_params(tmp_path, subjects, ["A", "F"])
    state = benchmark(
        str(params_file), runs_dir=str(tmp_path / "runs"), reports_dir=str(tmp_path / "reports"), return_state=True
    )
    result = state.result()
    # Task runs are named by subject and variant: the UI's run list tells them apart.
    names, messages = task_runs_and_logs(state.state_details.flow_run_id)
    assert len(names) == len(set(names)), sorted(names)
    for stage in ("train", "generate", "evaluate"):
        assert {f"{stage}-toy_a-{v}" for v in "AF"} <= set(names)
    # eqdiff's lines, logged on the Dask workers, are in the runs' logs.
    assert sum(m.startswith("concept written to ") for m in messages) == 2

    assert sorted(result["runs"]) == ["toy_a/A", "toy_a/F"]
    assert (tmp_path / "reports" / "index.html").is_file()
    client = MlflowClient(tracking_uri=result["tracking_uri"])
    parent = client.get_run(result["parent_run_id"])
    assert parent.info.status == "FINISHED"
    assert "report" in {a.path for a in client.list_artifacts(parent.info.run_id)}
    for key, run_id in result["runs"].items():
        run = client.get_run(run_id)
        variant = key.split("/")[1]
        assert run.data.tags["mlflow.parentRunId"] == parent.info.run_id
        assert run.data.params["train.variant"] == variant
        assert run.data.params["fdte.p_l"] == "0.1"
        # Variant A is Custom Diffusion: no FDTE, no RRA (the params logged are the ones that ran).
        assert run.data.params["fdte.enabled"] == str(variant == "F")
        assert run.data.params["rra.enabled"] == str(variant == "F")
        losses = client.get_metric_history(run_id, "loss/total")
        assert [m.step for m in sorted(losses, key=lambda m: m.step)] == [1, 2]
        for name in ("unstylized/clip_t", "unstylized/clip_i", "stylized/dino_i"):
            assert name in run.data.metrics
        artifacts = {a.path for a in client.list_artifacts(run_id)}
        assert {"masks", "bands", "samples", "concept", "metrics"} <= artifacts


@pytest.mark.slow
def test_failing_stage_fails_the_flow_with_its_line_and_a_fixed_rerun_resumes(
    tmp_path: Path, prefect_api, monkeypatch: pytest.MonkeyPatch
):
    from flows.customize import customize

    subject = make_sample_subject(tmp_path / "subjects" / "toy", 2)
    good = (subject / "01.png").read_bytes()
    (subject / "01.png").write_bytes(good[: len(good) // 3])  # a truncated download
    params_file = write_params(tmp_path, [{"name": "toy", "dir": str(subject), "class_noun": "toy"}], ["F"])
    monkeypatch.chdir(tmp_path)

    state = customize(str(params_file), return_state=True)
    assert state.is_failed()
    assert "01.png" in state.message and "\n" not in state.message.strip()
    prior_manifest = tmp_path / "runs" / "prior" / "toy" / "prior.json"
    assert prior_manifest.is_file()  # the stage before the failure kept its output
    assert not (tmp_path / "runs" / "toy" / "masks").exists()  # the failed stage left nothing behind
    before = prior_manifest.stat().st_mtime_ns

    (subject / "01.png").write_bytes(good)
    result = customize(str(params_file))
    assert list(result["runs"]) == ["toy/F"]
    assert prior_manifest.stat().st_mtime_ns == before  # resumed: the prior was not redone
    assert (tmp_path / "runs" / "toy" / "F" / "metrics.json").is_file()


def test_customize_refuses_an_unknown_subject_in_one_line(tmp_path: Path, prefect_api):
    from flows.customize import customize

    params_file = write_params(tmp_path, [{"name": "toy", "dir": str(tmp_path), "class_noun": "toy"}], ["F"])
    state = customize(str(params_file), subject="nope", return_state=True)
    assert state.is_failed() and "subject 'nope': not in params subjects ['toy']" in state.message


def test_benchmark_deployment_is_scheduled_by_params(tmp_path: Path):
    from flows.deploy import deployments

    shutil.copy(REPO / "params.yaml", tmp_path / "params.yaml")
    text = (tmp_path / "params.yaml").read_text().replace("cron: 0 3 * * *", "cron: 30 1 * * 1")
    (tmp_path / "params.yaml").write_text(text)
    nightly, *others = deployments(str(tmp_path / "params.yaml"))
    assert nightly.name == "benchmark-nightly" and nightly.flow_name == "benchmark"
    assert [s.schedule.cron for s in nightly.schedules] == ["30 1 * * 1"]
    assert {d.flow_name for d in others} == {"customize", "sweep"}


def test_local_cluster_gives_each_gpu_its_own_worker():
    from eqdiff.config import OrchestrationConfig
    from flows.cluster import dask_task_runner, one_gpu_per_worker_cluster

    cpu = dask_task_runner(OrchestrationConfig(n_workers=2), gpus=0)
    assert cpu.cluster_kwargs["n_workers"] == 2 and cpu.cluster_kwargs["threads_per_worker"] == 1
    gpu = dask_task_runner(OrchestrationConfig(n_workers=2), gpus=4)
    assert gpu.cluster_class is one_gpu_per_worker_cluster and gpu.cluster_kwargs == {"gpus": [0, 1]}
    remote = dask_task_runner(OrchestrationConfig(dask_address="tcp://scheduler:8786"), gpus=4)
    assert remote.address == "tcp://scheduler:8786"
