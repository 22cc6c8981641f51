"""``eqdiff report``: tables, trade-off plot, HTML gallery over many runs (DESIGN §5) -> ``build_report``.

Reads no params section. ``--runs`` holds ``<subject>/<variant>/metrics.json`` (+ ``samples/``) and
``<subject>/masks/``; ``--out`` is replaced whole (see ``eqdiff.report``).
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from eqdiff.report import build_report


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--runs", type=Path, required=True, help="folder of <subject>/<variant>/metrics.json")
    parser.add_argument("--out", type=Path, required=True, help="report folder to write (replaced)")


def run(args: argparse.Namespace, params: dict[str, Any]) -> None:
    build_report(args.runs, args.out)
