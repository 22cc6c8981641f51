"""The ``sweep`` flow: a parameter grid as DVC experiments (``dvc exp run -S ...`` per point).

Each grid point is one ``dvc exp run``, so DVC re-runs only the stages whose params changed (a sweep of
``fdte.p_l``/``fdte.p_o`` re-runs train onwards) and every point is a versioned experiment; the flow returns
``dvc exp show --json``'s rows. Run it with ``python -m flows.sweep -g fdte.p_l=0.1,0.2 -g fdte.p_o=0.8,0.7``
(points are the Cartesian product; a point whose p_l + p_h + p_o != 1 fails with the config's one-line error).
"""

from __future__ import annotations

import argparse
import itertools
import sys
from pathlib import Path
from typing import Any

import yaml
from prefect import flow

from tasks.experiments import exp_run_task, exp_show_task


def grid_points(grid: dict[str, list[Any]]) -> list[dict[str, Any]]:
    """The Cartesian product of ``grid`` as one override mapping per point."""
    return [dict(zip(grid, values, strict=True)) for values in itertools.product(*grid.values())]


def point_name(prefix: str, index: int) -> str:
    return f"{prefix}-{index:03d}"


@flow(name="sweep")
def sweep(grid: dict[str, list[Any]], repo: str = ".", prefix: str = "sweep") -> list[dict[str, Any]]:
    """Run every grid point as a named DVC experiment in ``repo``; returns ``dvc exp show`` rows."""
    for index, point in enumerate(grid_points(grid)):
        exp_run_task(point, point_name(prefix, index), Path(repo))
    return exp_show_task(Path(repo))


def parse_grid(specs: list[str]) -> dict[str, list[Any]]:
    """``["fdte.p_l=0.1,0.2"]`` -> ``{"fdte.p_l": [0.1, 0.2]}`` (values in YAML syntax)."""
    grid = {}
    for spec in specs:
        key, sep, values = spec.partition("=")
        if not sep or "." not in key or not values:
            raise SystemExit(f"-g {spec!r}: expected section.key=v1,v2,...")
        grid[key] = [yaml.safe_load(v) for v in values.split(",")]
    return grid


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m flows.sweep", description=__doc__.splitlines()[0])
    parser.add_argument("-g", "--grid", action="append", required=True, help="section.key=v1,v2,... (repeatable)")
    parser.add_argument("--prefix", default="sweep", help="experiment name prefix")
    args = parser.parse_args(argv)
    state = sweep(parse_grid(args.grid), prefix=args.prefix, return_state=True)
    if state.is_failed():
        print(f"sweep: {state.message}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
