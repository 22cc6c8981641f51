"""Run ``eqdiff`` stages in-process through ``eqdiff.cli.main``, exactly as a user's command line would."""

from __future__ import annotations

from eqdiff import cli


def run_cli(argv: list[str]) -> int:
    """``eqdiff <argv>`` in-process; returns the exit status (read stderr with ``capsys``)."""
    return cli.main(argv)
