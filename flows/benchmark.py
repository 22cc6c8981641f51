"""The ``benchmark`` flow: subjects x variants fanned out on Dask (docs/architecture.md; README.md, Scaling out).

Per class noun one prior, per subject masks -> augment -> bands, then per (subject, variant) train ->
generate -> evaluate, all submitted at once to the Dask task runner of ``flows.cluster`` (a local cluster by
default, ``orchestration.dask_address`` to use an existing one, one GPU per worker where GPUs exist). The
report and the MLflow runs (a parent run, a nested run per (subject, variant)) follow in this process.
Run it with ``python -m flows.benchmark [-S train.steps=600]`` or serve it on a schedule (``flows.deploy``).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from prefect import flow

from eqdiff.config import OrchestrationConfig
from flows.cluster import dask_task_runner
from flows.common import Plan, read_plan, subject_stages, submit
from tasks.stages import (
    check_models_task,
    prior_task,
    report_task,
    track_task,
)


@flow(name="benchmark-runs")
def benchmark_runs(plan: Plan) -> list[Path]:
    """Submit every stage of every (subject, variant); returns the metrics files."""
    priors = {noun: prior_task.submit(noun, plan.layout, plan.params) for noun in plan.classes}
    evaluations = []
    for subject in plan.subjects:
        evaluations += subject_stages(plan, subject, priors[subject.class_noun], submit)
    return [future.result() for future in evaluations]


@flow(name="benchmark")
def benchmark(
    params_file: str = "params.yaml",
    overrides: list[str] | None = None,
    runs_dir: str = "runs",
    reports_dir: str = "reports",
) -> dict[str, Any]:
    """All subjects x variants of the params; returns the MLflow run ids (``parent_run_id``, ``runs``).

    ``runs_dir`` and ``reports_dir`` resolve against the store (``orchestration.store``, else the current
    directory), where the inputs are copied first: the workers may be other machines (``tasks.store``)."""
    plan = read_plan(params_file, overrides, runs_dir, reports_dir)
    check_models_task(plan.params, plan.layout)  # before the cluster starts: a wrong model path fails in seconds
    plan.draw_demo_subject()
    plan = plan.staged()
    config = OrchestrationConfig.from_mapping(plan.params.get("orchestration"))
    metrics = benchmark_runs.with_options(task_runner=dask_task_runner(config))(plan)
    report = report_task(plan.layout, plan.reports, metrics)
    return track_task(plan.params, plan.layout, report, "prefect-benchmark")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m flows.benchmark", description=__doc__.splitlines()[0])
    parser.add_argument("--params", default="params.yaml", help="params YAML")
    parser.add_argument("-S", "--set", dest="overrides", action="append", default=[], help="section.key=value")
    args = parser.parse_args(argv)
    state = benchmark(args.params, args.overrides, return_state=True)
    if state.is_failed():
        print(f"benchmark: {state.message}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
