"""Serve the flows as Prefect deployments: ``benchmark`` on the cron schedule of ``orchestration.cron``.

``python -m flows.deploy`` starts a long-running process that polls the Prefect API (``prefect server start``
elsewhere, or Prefect Cloud via ``PREFECT_API_URL``) and runs scheduled and manually triggered runs of
``benchmark`` (nightly), ``customize`` and ``sweep``. On a GPU box start it there; see flows.cluster for GPUs.
"""

from __future__ import annotations

import argparse

from prefect import serve
from prefect.deployments.runner import RunnerDeployment

from eqdiff.config import OrchestrationConfig, load_params
from flows.benchmark import benchmark
from flows.customize import customize
from flows.sweep import sweep


def deployments(params_file: str = "params.yaml") -> list[RunnerDeployment]:
    """The deployments to serve; the benchmark's schedule is ``orchestration.cron`` of ``params_file``."""
    config = OrchestrationConfig.from_mapping(load_params(params_file).get("orchestration"))
    return [
        # one at a time: two benchmark runs would write the same runs/ and reports/ (a slow night overlapping)
        benchmark.to_deployment(
            name="benchmark-nightly", cron=config.cron, parameters={"params_file": params_file}, concurrency_limit=1
        ),
        customize.to_deployment(name="customize", parameters={"params_file": params_file}),
        sweep.to_deployment(name="sweep"),
    ]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m flows.deploy", description=__doc__.splitlines()[0])
    parser.add_argument("--params", default="params.yaml", help="params YAML (orchestration.cron)")
    args = parser.parse_args(argv)
    serve(*deployments(args.params))


if __name__ == "__main__":
    main()
