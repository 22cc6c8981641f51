"""The ``sweep`` flow: a parameter grid as queued DVC experiments, checked before any of them runs.

``-g key=v1,v2`` axes combine as a Cartesian product; ``-z key=v1,v2`` axes are zipped (equal lengths, one
value of each per point) and combined with the ``-g`` axes; ``--follow fdte.p_o`` derives that probability
per point as 1 - the other two (p_l + p_h + p_o must be 1), so one probability can be swept alone::

    python -m flows.sweep -g fdte.p_l=0.1,0.2,0.3 --follow fdte.p_o -j 2

Every point is checked against ``params.yaml`` first (a bad point fails the sweep with one line naming it,
exit 2, nothing queued); then each point is queued (``dvc exp run --queue``) and the queue run with
``dvc queue start -j N`` in temporary workspaces, so ``params.yaml`` and the workspace stay as they were. A
failing point does not stop the others; the flow reports which failed, with their stage's one-line error.
"""

from __future__ import annotations

import argparse
import itertools
import sys
import time
from pathlib import Path
from typing import Any

from prefect import flow

from eqdiff.config import ConfigError, load_params, yaml_value
from eqdiff.errors import EqDiffError
from tasks.experiments import (
    check_points,
    check_points_task,
    exp_queue_task,
    exp_show_task,
    failure_line,
    override_text,
    queue_run_task,
)

PROBABILITIES = ("fdte.p_l", "fdte.p_h", "fdte.p_o")
"""The band probabilities, which sum to 1: any one of them can ``--follow`` the other two."""


class SweepError(EqDiffError, RuntimeError):
    """Some points of a sweep failed; the message names each with its error line."""


def grid_points(grid: dict[str, list[Any]], zipped: dict[str, list[Any]] | None = None) -> list[dict[str, Any]]:
    """The Cartesian product of ``grid``'s axes, each combined with every row of the ``zipped`` axes."""
    zipped = zipped or {}
    lengths = {len(values) for values in zipped.values()}
    if len(lengths) > 1:
        raise ConfigError(f"-z axes must have equal lengths, got { ({k: len(v) for k, v in zipped.items()}) }")
    rows = [dict(zip(zipped, values, strict=True)) for values in zip(*zipped.values(), strict=True)] or [{}]
    product = [dict(zip(grid, values, strict=True)) for values in itertools.product(*grid.values())]
    return [{**point, **row} for point in product for row in rows]


def follow(points: list[dict[str, Any]], key: str, base: dict[str, Any]) -> list[dict[str, Any]]:
    """Each point with ``key`` (one of ``PROBABILITIES``) = 1 - the other two (from the point, else ``base``)."""
    if key not in PROBABILITIES:
        raise ConfigError(f"--follow {key}: expected one of {', '.join(PROBABILITIES)}")
    others = [p for p in PROBABILITIES if p != key]
    fdte = base.get("fdte") or {}
    followed = []
    for point in points:
        if key in point:
            raise ConfigError(f"--follow {key}: it is also swept (-g/-z); sweep the other probabilities")
        rest = [point.get(name, fdte.get(name.partition(".")[2], 0.0)) for name in others]
        if not all(isinstance(v, int | float) for v in rest):
            raise ConfigError(f"--follow {key}: {', '.join(others)} must be numbers, got {rest}")
        followed.append({**point, key: round(1.0 - sum(rest), 12)})  # 1 - 0.2 - 0.1 = 0.7, not 0.7000000000000001
    return followed


def point_name(prefix: str, index: int) -> str:
    return f"{prefix}-{index:03d}"


def describe(point: dict[str, Any]) -> str:
    return ", ".join(override_text(k, v) for k, v in point.items())


@flow(name="sweep")
def sweep(
    points: list[dict[str, Any]],
    repo: str = ".",
    prefix: str = "sweep",
    jobs: int = 1,
) -> list[dict[str, Any]]:
    """Check, queue and run every point as DVC experiment ``<prefix>-NNN`` in ``repo``; ``dvc exp show`` rows.

    Raises ``ConfigError`` (nothing queued) for an invalid point and ``SweepError`` naming the failed points
    once every point has run.
    """
    root = Path(repo)
    check_points_task(points, root / "params.yaml")
    names = [point_name(prefix, index) for index in range(len(points))]
    for name, point in zip(names, points, strict=True):
        exp_queue_task(point, name, root)
    statuses = queue_run_task(names, root, jobs)
    failed = [
        f"{name} ({describe(point)}): {failure_line(name, root)}"
        for name, point in zip(names, points, strict=True)
        if statuses[name] != "Success"
    ]
    if failed:
        raise SweepError(f"{len(failed)} of {len(points)} point(s) failed: " + "; ".join(failed))
    return [row for row in exp_show_task(root) if row["name"] in names]


def parse_axes(specs: list[str], flag: str) -> dict[str, list[Any]]:
    """``["fdte.p_l=0.1,0.2"]`` -> ``{"fdte.p_l": [0.1, 0.2]}`` (values in YAML syntax)."""
    axes = {}
    for spec in specs:
        key, sep, values = spec.partition("=")
        if not sep or "." not in key or not values:
            raise ConfigError(f"{flag} {spec!r}: expected section.key=v1,v2,...")
        try:
            axes[key] = [yaml_value(v) for v in values.split(",")]
        except ConfigError as exc:
            raise ConfigError(f"{flag} {spec!r}: {exc}") from None
    return axes


def parse_grid(specs: list[str]) -> dict[str, list[Any]]:
    return parse_axes(specs, "-g")


def plan_points(grid: list[str], zipped: list[str], followed: str | None, params_file: Path) -> list[dict[str, Any]]:
    """The sweep's points from the command line's ``-g``, ``-z`` and ``--follow``."""
    if not grid and not zipped:
        raise ConfigError("give at least one -g or -z axis")
    points = grid_points(parse_axes(grid, "-g"), parse_axes(zipped, "-z"))
    return follow(points, followed, load_params(params_file)) if followed else points


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m flows.sweep", description=__doc__.splitlines()[0])
    parser.add_argument("-g", "--grid", action="append", default=[], help="section.key=v1,v2,... (product)")
    parser.add_argument("-z", "--zip", action="append", default=[], help="section.key=v1,v2,... (zipped)")
    parser.add_argument("--follow", help="a probability derived per point: fdte.p_l | fdte.p_h | fdte.p_o")
    parser.add_argument("-j", "--jobs", type=int, default=1, help="experiments run at once (dvc queue start -j)")
    parser.add_argument("--prefix", help="experiment name prefix (default: sweep-<date>-<time>)")
    args = parser.parse_args(argv)
    prefix = args.prefix or time.strftime("sweep-%Y%m%d-%H%M%S")
    try:
        points = plan_points(args.grid, args.zip, args.follow, Path("params.yaml"))
        check_points(points, Path("params.yaml"))  # here too: a bad grid fails in one line, no flow run
    except ConfigError as exc:
        print(f"sweep: error: {exc}", file=sys.stderr)
        return 2
    state = sweep(points, prefix=prefix, jobs=args.jobs, return_state=True)
    if state.is_completed():
        print(f"sweep: {len(points)} experiment(s) {point_name(prefix, 0)} ...; compare them with `dvc exp show`")
        return 0
    try:
        state.result()
    except EqDiffError as exc:
        print(f"sweep: error: {exc}", file=sys.stderr)
    return 1


if __name__ == "__main__":
    sys.exit(main())
