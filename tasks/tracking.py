"""MLflow tracking of pipeline results (docs/architecture.md, Stages; README.md, Viewing results).

One parent run per pipeline invocation and one nested run per (subject, variant), logged after the fact from
the files the stages wrote, so the DVC ``track`` stage and the Prefect flows log exactly the same things:

- params: every config section flattened (``fdte.p_l``, ``train.variant`` ...) with the variant applied; the
  parent carries those its nested runs share, plus ``pipeline.subjects`` and ``pipeline.variants``;
- metrics: per-step losses from train's ``losses.jsonl`` (``loss/total`` ..., at their training step and wall
  time) and the final ``unstylized/clip_t``, ``stylized/dino_i`` ... from ``metrics.json``; the parent carries
  them per variant averaged over subjects (``F/unstylized/clip_t`` ...);
- artifacts: the masks overlay, band and augment sheets, the sample grid, the concept, ``metrics.json`` and,
  on the parent run, the HTML report;
- names: ``pipeline-<source>-<YYYYmmdd-HHMMSS>-<id>`` for the parent, ``<subject>/<variant>-<same suffix>``
  for its nested runs, so every name is unique and a nested run names its invocation.

Entry point of the DVC stage: ``python -m tasks.tracking --params params.yaml --runs runs --reports reports
--out tracking/mlflow_run.json``. The default tracking URI is ``sqlite:///mlflow.db`` in the project directory;
its artifacts go to ``mlartifacts/`` beside the database.

A relative SQLite path resolves against the repository root, not the current directory: DVC runs queued and
``--temp`` experiments in throw-away copies under ``.dvc/tmp/exps/`` and sets ``DVC_ROOT`` to the repository
there, so every experiment lands in the one store. Runs are tagged with the DVC experiment (``DVC_EXP_NAME``,
``dvc.exp.baseline_rev``) and the git revision they ran from (``mlflow.source.git.commit``).
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

from eqdiff.config import (
    OrchestrationConfig,
    load_params,
)
from eqdiff.errors import EqDiffError
from eqdiff.io.artifacts import write_json
from eqdiff.io.run_layout import RunLayout
from eqdiff.io.schemas.evaluation import EvaluationRecord, MetricsRecord
from tasks.run_owners import Terminated, close_stale_runs, owner_tags, raise_terminated
from tasks.spec import read_subjects, read_variants
from tasks.tracking_data import averaged_metrics, common_params, final_metrics, flatten_params, read_losses

logger = logging.getLogger(__name__)

_BATCH = 100  # MLflow's log_batch limit for params (metrics allow 1000)


def resolve_tracking_uri(uri: str) -> str:
    """``sqlite:///x.db`` -> ``sqlite:////<repository root>/x.db``; other URIs unchanged.

    The root is ``$DVC_ROOT`` (set by DVC for every stage command; the parent repository inside experiment
    workspaces), else the current directory.
    """
    if not uri.startswith("sqlite:///") or uri.startswith("sqlite:////"):
        return uri
    root = Path(os.environ.get("DVC_ROOT") or Path.cwd())
    return f"sqlite:///{(root / uri.removeprefix('sqlite:///')).resolve()}"


def run_tags() -> dict[str, str]:
    """Where this run comes from: the git revision and, inside a DVC experiment, its name and baseline."""
    tags = {}
    if commit := _git_commit():
        tags["mlflow.source.git.commit"] = commit
    if name := os.environ.get("DVC_EXP_NAME"):
        tags["dvc.exp.name"] = name
    if baseline := os.environ.get("DVC_EXP_BASELINE_REV"):
        tags["dvc.exp.baseline_rev"] = baseline
    return tags


def _client(tracking_uri: str):
    from mlflow.tracking import MlflowClient

    return MlflowClient(tracking_uri=tracking_uri)


EXPERIMENT_KIND = ("mlflow.experimentKind", "custom_model_development")
"""The experiment's kind, as MLflow 3's UI reads it: model training, not a GenAI app (whose traces pages are empty
here). MLflow 3.17 still opens an experiment on its Overview tab: the runs table is ``runs_address``."""
UI_ADDRESS = "http://127.0.0.1:5000"
"""Where ``mlflow ui`` serves a local store (README, "MLflow")."""


def runs_address(tracking_uri: str, experiment_id: str) -> str:
    """The address of the experiment's runs table: on the tracking server, or on ``mlflow ui`` for a local store."""
    base = tracking_uri.rstrip("/") if tracking_uri.startswith(("http://", "https://")) else UI_ADDRESS
    return f"{base}/#/experiments/{experiment_id}/runs"


def _experiment_id(client, name: str, tracking_uri: str) -> str:
    experiment_id = _find_or_create_experiment(client, name, tracking_uri)
    experiment = client.get_experiment(experiment_id)
    if experiment.tags.get(EXPERIMENT_KIND[0]) != EXPERIMENT_KIND[1]:
        client.set_experiment_tag(experiment_id, *EXPERIMENT_KIND)
    return experiment_id


def _find_or_create_experiment(client, name: str, tracking_uri: str) -> str:
    existing = client.get_experiment_by_name(name)
    if existing is not None:
        return existing.experiment_id
    location = None
    if tracking_uri.startswith("sqlite:///"):  # keep artifacts beside the database, not in the caller's cwd
        database = Path(tracking_uri.removeprefix("sqlite:///"))  # resolved: absolute
        location = (database.parent / "mlartifacts").as_uri()
    from mlflow.exceptions import MlflowException

    try:
        return client.create_experiment(name, artifact_location=location)
    except MlflowException:  # created meanwhile by a parallel experiment (`dvc queue start -j 2`)
        existing = client.get_experiment_by_name(name)
        if existing is None:
            raise
        return existing.experiment_id


def _log_batches(client, run_id: str, params: dict[str, str], metrics: list) -> None:
    from mlflow.entities import Param

    items = [Param(k, v) for k, v in sorted(params.items())]
    for start in range(0, len(items), _BATCH):
        client.log_batch(run_id, params=items[start : start + _BATCH])
    for start in range(0, len(metrics), 1000):
        client.log_batch(run_id, metrics=metrics[start : start + 1000])


def _metric_rows(layout: RunLayout, subject: str, variant: str) -> list:
    from mlflow.entities import Metric

    now = int(time.time() * 1000)
    rows = [
        Metric(key, value, now if wall_time is None else int(wall_time * 1000), step)
        for step, wall_time, values in read_losses(layout.losses(subject, variant))
        for key, value in values.items()
    ]
    metrics_file = layout.metrics(subject, variant)
    if metrics_file.is_file():
        evaluated = int(metrics_file.stat().st_mtime * 1000)  # when evaluate wrote them, not when tracked
        final = final_metrics(MetricsRecord.read(metrics_file))
        rows += [Metric(key, value, evaluated, 0) for key, value in final.items()]
    return rows


def run_suffix() -> str:
    """``20261201-205311-1a2b3c``: when the invocation started and a short random id, so run names are unique
    (two invocations in one second included) and sort by time."""
    return f"{time.strftime('%Y%m%d-%H%M%S')}-{uuid.uuid4().hex[:6]}"


def _log_artifacts(client, run_id: str, layout: RunLayout, subject: str, variant: str) -> None:
    files = {
        layout.masks(subject) / "overlay.png": "masks",
        layout.bands(subject) / "sheet.png": "bands",
        layout.augment(subject) / "sheet.png": "augment",
        layout.samples(subject, variant) / "grid.png": "samples",
        layout.metrics(subject, variant): "metrics",
    }
    for path, artifact_path in files.items():
        if path.is_file():
            client.log_artifact(run_id, str(path), artifact_path)
    if layout.concept(subject, variant).is_dir():
        client.log_artifacts(run_id, str(layout.concept(subject, variant)), "concept")


def _git_commit() -> str | None:
    try:
        result = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, check=True)
    except (OSError, subprocess.CalledProcessError):
        return None
    return result.stdout.strip()


def work_span(files: list[Path], first_step: float | None = None) -> tuple[int | None, int | None]:
    """``(start, end)`` in ms of the work that wrote ``files`` (the earliest and latest modification time of those
    that exist; ``first_step``, a wall time in s, may start it earlier): a run records when its work happened, not
    when the tracking stage logged it."""
    written = [path.stat().st_mtime for path in files if path.exists()]
    starts = written + ([first_step] if first_step is not None else [])
    if not starts:
        return None, None
    return int(min(starts) * 1000), int(max(written or starts) * 1000)


def _run_files(layout: RunLayout, subject: str, variant: str) -> list[Path]:
    """What one (subject, variant) run's stages wrote: the concept, its losses, the samples and the evaluation."""
    return [
        layout.losses(subject, variant),
        layout.concept(subject, variant) / "concept.json",
        layout.samples(subject, variant) / "index.json",
        layout.metrics(subject, variant),
        layout.evaluation(subject, variant),
    ]


def _first_step_time(layout: RunLayout, subject: str, variant: str) -> float | None:
    times = [wall for _, wall, _ in read_losses(layout.losses(subject, variant)) if wall is not None]
    return min(times) if times else None


def _log_nested_run(
    client,
    experiment_id: str,
    parent_id: str,
    layout: RunLayout,
    subject,
    variant: str,
    flat: dict[str, str],
    suffix: str,
    open_runs: list[str],
    origin: dict[str, str],
) -> str:
    """One (subject, variant) run under ``parent_id``: its params, losses, final metrics and artifacts, tagged
    with ``origin`` (git revision, DVC experiment, owning process). While it is being logged its id is first in
    ``open_runs`` (the runs to end if logging dies)."""
    info = layout.evaluation(subject.name, variant)
    calibrated = info.is_file() and EvaluationRecord.read(info).calibrated
    start, end = work_span(_run_files(layout, subject.name, variant), _first_step_time(layout, subject.name, variant))
    run = client.create_run(
        experiment_id,
        start_time=start,
        run_name=f"{subject.name}/{variant}-{suffix}",
        tags={
            "mlflow.parentRunId": parent_id,
            "eqdiff.subject": subject.name,
            "eqdiff.class_noun": subject.class_noun,
            "eqdiff.variant": variant,
            "eqdiff.calibrated": str(calibrated).lower(),
            **origin,
        },
    )
    run_id = run.info.run_id
    open_runs.insert(0, run_id)
    _log_batches(client, run_id, flat, _metric_rows(layout, subject.name, variant))
    _log_artifacts(client, run_id, layout, subject.name, variant)
    client.set_terminated(run_id, end_time=end)
    open_runs.remove(run_id)
    return run_id


def _log_parent_summary(
    client,
    parent_id: str,
    params: dict[str, Any],
    run_params: list[dict[str, str]],
    run_metrics: dict[tuple[str, str], dict[str, float]],
) -> None:
    """The parent run's params (those its nested runs share, plus which subjects and variants ran) and
    metrics (per variant, averaged over subjects)."""
    from mlflow.entities import Metric

    shared = common_params(run_params)
    shared["pipeline.subjects"] = ",".join(s.name for s in read_subjects(params))
    shared["pipeline.variants"] = ",".join(read_variants(params))
    now = int(time.time() * 1000)
    metrics = [Metric(key, value, now, 0) for key, value in sorted(averaged_metrics(run_metrics).items())]
    _log_batches(client, parent_id, shared, metrics)


def log_pipeline(
    params: dict[str, Any],
    runs_dir: str | Path,
    reports_dir: str | Path | None = None,
    *,
    run_name: str | None = None,
    source: str = "dvc",
) -> dict[str, Any]:
    """Log one pipeline invocation; returns ``{"tracking_uri", "experiment", "parent_run_id", "runs"}``.

    ``runs`` maps ``"<subject>/<variant>"`` to its nested run id. Every (subject, variant) of ``params`` must
    have its ``metrics.json`` under ``runs_dir``. ``run_name`` (default ``pipeline-<source>``) is the parent's
    name before the unique suffix of ``run_suffix``.
    """
    from mlflow.entities import RunTag

    layout = RunLayout(Path(runs_dir))
    config = OrchestrationConfig.from_mapping(params.get("orchestration"))
    subjects, variants = read_subjects(params), read_variants(params)
    for subject in subjects:
        for variant in variants:
            if not layout.metrics(subject.name, variant).is_file():
                raise EqDiffError(f"{layout.metrics(subject.name, variant)}: missing; run evaluate first")
    tracking_uri = resolve_tracking_uri(config.tracking_uri)
    client = _client(tracking_uri)
    experiment_id = _experiment_id(client, config.experiment, tracking_uri)
    close_stale_runs(client, experiment_id)
    origin = {**run_tags(), **owner_tags()}
    tags = {"eqdiff.source": source, "eqdiff.subjects": ",".join(s.name for s in subjects), **origin}
    suffix = run_suffix()
    # the pipeline's work: every stage output of these subjects and variants, the class images and the report
    outputs = [
        *(layout.subject(s.name) / name for s in subjects for name in ("masks/masks.json", "augment/augment.json")),
        *(layout.bands(s.name) / "bands.json" for s in subjects),
        *(layout.prior(s.class_noun) / "prior.json" for s in subjects),
        *(path for s in subjects for v in variants for path in _run_files(layout, s.name, v)),
        *([Path(reports_dir) / "summary.json"] if reports_dir is not None else []),
    ]
    steps = [t for s in subjects for v in variants if (t := _first_step_time(layout, s.name, v)) is not None]
    start, end = work_span(outputs, min(steps) if steps else None)
    run_title = f"{run_name or f'pipeline-{source}'}-{suffix}"
    parent = client.create_run(experiment_id, start_time=start, run_name=run_title, tags=tags)
    parent_id = parent.info.run_id
    nested: dict[str, str] = {}
    run_params: list[dict[str, str]] = []
    run_metrics: dict[tuple[str, str], dict[str, float]] = {}
    open_runs = [parent_id]  # ended, innermost first, when the logging dies
    try:
        for subject in subjects:
            for variant in variants:
                flat = flatten_params(params, variant)
                run_id = _log_nested_run(
                    client, experiment_id, parent_id, layout, subject, variant, flat, suffix, open_runs, origin
                )
                nested[f"{subject.name}/{variant}"] = run_id
                run_params.append(flat)
                metrics = MetricsRecord.read(layout.metrics(subject.name, variant))
                run_metrics[subject.name, variant] = final_metrics(metrics)
        _log_parent_summary(client, parent_id, params, run_params, run_metrics)
        if reports_dir is not None and Path(reports_dir).is_dir():
            client.log_artifacts(parent_id, str(reports_dir), "report")
            client.log_batch(parent_id, tags=[RunTag("eqdiff.report", str(Path(reports_dir) / "index.html"))])
    except BaseException as exc:
        # An error is FAILED; an interruption (Ctrl-C, SIGTERM, a cancelled Prefect task, exit) is KILLED.
        status = "FAILED" if isinstance(exc, Exception) else "KILLED"
        for run_id in open_runs:
            client.set_terminated(run_id, status=status)
        raise
    client.set_terminated(parent_id, end_time=end)
    logger.info("MLflow: parent run %s with %d nested run(s) in %s", parent_id, len(nested), tracking_uri)
    logger.info("MLflow: the runs table is %s", runs_address(tracking_uri, experiment_id))
    return {
        "tracking_uri": tracking_uri,
        "experiment": config.experiment,
        "parent_run_id": parent_id,
        "runs": nested,
    }


def main(argv: list[str] | None = None) -> int:
    """The DVC ``track`` stage: log, then write the run ids to ``--out``; user errors exit 2 in one line."""
    parser = argparse.ArgumentParser(prog="python -m tasks.tracking", description=__doc__.splitlines()[0])
    parser.add_argument("--params", type=Path, default=Path("params.yaml"), help="params YAML")
    parser.add_argument("--runs", type=Path, required=True, help="runs folder (<subject>/<variant>/...)")
    parser.add_argument("--reports", type=Path, help="report folder logged on the parent run")
    parser.add_argument("--out", type=Path, required=True, help="JSON file to write the run ids to")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    signal.signal(signal.SIGTERM, raise_terminated)
    try:
        result = log_pipeline(load_params(args.params), args.runs, args.reports)
    except EqDiffError as exc:
        print(f"track: error: {exc}", file=sys.stderr)
        return 2
    except (KeyboardInterrupt, Terminated):
        print("track: interrupted; its MLflow runs were ended as KILLED", file=sys.stderr)
        return 130
    write_json(args.out, result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
