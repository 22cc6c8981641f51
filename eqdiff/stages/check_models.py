"""``eqdiff check-models``: check every model path the params name, in seconds, before any long stage runs.

The work is ``eqdiff.models.check_models.check_models``. Reads params sections ``model``, ``evaluate`` (``clip_model``,
``dino_model``) and ``masks`` (the backend and its files). Prints one table row per path; any problem is a
``ModelCheckError`` with one line per problem (exit status 2). ``--out`` also writes the table to a file
(``dvc.yaml``'s record of the check), only when every path passes.
"""

from __future__ import annotations

import argparse
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from eqdiff.config import Params
from eqdiff.models.check_models import ModelCheckError, ModelRow, check_models, format_table


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", type=Path, default=None, help="also write the table here (when every path passes)")


def run(params: Params | Mapping[str, Any], out: Path | None = None) -> list[ModelRow]:
    """The stage (every door calls this): one row per model path, or a ``ModelCheckError`` listing every problem
    (its ``rows`` hold the whole table)."""
    rows = check_models(Params.of(params))
    problems = [row.problem for row in rows if row.problem]
    if problems:
        raise ModelCheckError("\n".join(problems), rows)
    if out is not None:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(format_table(rows) + "\n", encoding="utf-8")
    return rows


def main(args: argparse.Namespace, params: Params) -> None:
    try:
        rows = run(params, args.out)
    except ModelCheckError as exc:
        print(format_table(exc.rows))
        raise
    print(format_table(rows))
