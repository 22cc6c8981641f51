"""``eqdiff report``: tables, trade-off plot, HTML gallery over many runs (docs/method.md, Evaluation) ->
``build_report``.

Reads the top-level ``subjects`` (names) and ``variants`` of the params: the report covers exactly those
(subject, variant) runs, each of which must have its ``--runs/<subject>/<variant>/metrics.json``; other
folders under ``--runs`` (other experiments' subjects) are left out. Without ``subjects`` in the params (no
params file) it covers every run under ``--runs``. ``--out`` is replaced whole (see ``eqdiff.evaluation.report``).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from eqdiff.config import ConfigError, Params
from eqdiff.evaluation.report import build_report


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--runs", type=Path, required=True, help="folder of <subject>/<variant>/metrics.json")
    parser.add_argument("--out", type=Path, required=True, help="report folder to write (replaced)")


def selected_runs(params: Params) -> list[tuple[str, str]] | None:
    """``subjects`` x ``variants`` (default ``[F]``) of ``params`` as (subject, variant) pairs; None without
    ``subjects``."""
    subjects = params.get("subjects")
    if subjects is None:
        return None
    named = isinstance(subjects, list) and all(isinstance(s, dict) and isinstance(s.get("name"), str) for s in subjects)
    if not named:
        raise ConfigError(f"subjects: expected a list of {{name, dir, class_noun}}, got {subjects!r}")
    variants = params.get("variants", ["F"])
    if not isinstance(variants, list) or not variants or not all(isinstance(v, str) for v in variants):
        raise ConfigError(f"variants: expected a non-empty list of variant names, got {variants!r}")
    return [(subject["name"], variant) for subject in subjects for variant in dict.fromkeys(variants)]


def run(runs: Path, out: Path, selected: list[tuple[str, str]] | None = None) -> Path:
    """The stage (every door calls this): the report of the ``selected`` (subject, variant) runs (``None``:
    every run under ``runs``) into ``out``."""
    return build_report(runs, out, selected)


def main(args: argparse.Namespace, params: Params) -> None:
    run(args.runs, args.out, selected_runs(Params.of(params)))
