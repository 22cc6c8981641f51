"""The ``customize`` flow: one subject through every stage, then the report and MLflow (docs/architecture.md).

The same stages, the same typed functions and the same output layout as ``dvc repro`` (dvc.yaml), run in
this process one after another. A re-run after a failure resumes where it failed: each stage keeps outputs
whose inputs are unchanged. Run it with ``python -m flows.customize [--subject NAME] [-S section.key=value]``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from prefect import flow

from eqdiff.config import ConfigError
from flows.common import read_plan
from tasks.spec import DEMO_SUBJECT_DIR
from tasks.stages import (
    augment_task,
    bands_task,
    evaluate_task,
    generate_task,
    masks_task,
    prior_task,
    report_task,
    sample_task,
    track_task,
    train_task,
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
    plan = read_plan(params_file, overrides, runs_dir)
    chosen = next((s for s in plan.subjects if s.name == subject), None) if subject else plan.subjects[0]
    if chosen is None:
        raise ConfigError(f"subject {subject!r}: not in params subjects {[s.name for s in plan.subjects]}")
    if chosen.dir == DEMO_SUBJECT_DIR and not chosen.dir.exists():
        sample_task(chosen.dir)
    # prior first: it needs no photo, so a bad photo fails masks with the prior already kept
    prior = prior_task(chosen.class_noun, plan.layout, plan.params)
    masks = masks_task(chosen, plan.layout, plan.params)
    augment = augment_task(chosen, masks, plan.layout, plan.params)
    bands = bands_task(chosen, masks, plan.layout, plan.params)
    metrics = []
    for variant in plan.variants:
        concept = train_task(chosen, variant, masks, augment, bands, prior, plan.layout, plan.params)
        samples = generate_task(concept, plan.prompt_sets, plan.params)
        metrics.append(evaluate_task(samples, chosen, plan.params))
    report = report_task(plan.layout, Path(reports_dir), metrics)
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
