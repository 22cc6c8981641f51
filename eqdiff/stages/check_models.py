"""``eqdiff check-models``: check every model path the params name, in seconds, before any long stage runs.

The work is ``eqdiff.model_check.check_models``. Reads params sections ``model``, ``evaluate`` (``clip_model``,
``dino_model``) and ``masks`` (the backend and its files). Prints one table row per path to stdout; any problem
is a ``ModelCheckError`` with one line per problem (exit status 2). Writes nothing.
"""

from __future__ import annotations

import argparse
from typing import Any

from eqdiff.model_check import ModelCheckError, ModelRow, check_models, format_table


def add_arguments(parser: argparse.ArgumentParser) -> None:
    del parser  # the params are its only input


def check_models_stage(params: dict[str, Any]) -> list[ModelRow]:
    """The stage (every door calls this): the rows, or a ``ModelCheckError`` listing every problem."""
    rows = check_models(params)
    problems = [row.problem for row in rows if row.problem]
    if problems:
        raise ModelCheckError("\n".join(problems), rows)
    return rows


def run(args: argparse.Namespace, params: dict[str, Any]) -> None:
    try:
        rows = check_models_stage(params)
    except ModelCheckError as exc:
        print(format_table(exc.rows))
        raise
    print(format_table(rows))
