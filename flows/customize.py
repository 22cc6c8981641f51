"""The ``customize`` flow: one subject through every stage, then the report and MLflow (docs/architecture.md).

The same stages, the same typed functions and the same output layout as ``dvc repro`` (dvc.yaml), run in
this process one after another. A re-run after a failure resumes where it failed: each stage keeps outputs
whose inputs are unchanged. Run it with ``python -m flows.customize [--subject NAME] [-S section.key=value]``.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from prefect import flow

from eqdiff.config import ConfigError
from flows.common import read_plan, subject_stages
from tasks.stages import (
    check_models_task,
    prior_task,
    report_task,
    track_task,
)


@flow(name="customize", log_prints=False)
def customize(
    params_file: str = "params.yaml",
    subject: str | None = None,
    overrides: list[str] | None = None,
    runs_dir: str = "runs",
    reports_dir: str = "reports",
) -> dict[str, Any]:
    """Run ``subject`` (default: the first of ``subjects``) for every variant; returns the MLflow run ids.

    Only the chosen subject is run, reported (its variants) and tracked.
    """
    plan = read_plan(params_file, overrides, runs_dir, reports_dir)
    chosen = next((s for s in plan.subjects if s.name == subject), None) if subject else plan.subjects[0]
    if chosen is None:
        raise ConfigError(f"subject {subject!r}: not in params subjects {[s.name for s in plan.subjects]}")
    check_models_task(plan.params, plan.layout)  # a wrong model path fails here, in seconds, not after hours of work
    plan.draw_demo_subject()
    # prior first: it needs no photo, so a bad photo fails masks with the prior already kept
    prior = prior_task(chosen.class_noun, plan.layout, plan.params)
    metrics = subject_stages(plan, chosen, prior)
    report = report_task(plan.layout, plan.reports, metrics)
    only = {"name": chosen.name, "dir": str(chosen.dir), "class": chosen.class_slug}
    tracked = {**plan.params, "subjects": [only]}
    return track_task(tracked, plan.layout, report, "prefect-customize")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m flows.customize", description=__doc__.splitlines()[0])
    parser.add_argument("--params", default="params.yaml", help="params YAML")
    parser.add_argument("--subject", help="subject name from params (default: the first)")
    parser.add_argument("-S", "--set", dest="overrides", action="append", default=[], help="section.key=value")
    args = parser.parse_args(argv)
    state = customize(args.params, args.subject, args.overrides, return_state=True)
    if state.is_failed():
        print(f"customize: {state.message}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
