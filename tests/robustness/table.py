"""Print ``docs/robustness.md`` from the corpus definitions and what the stages really do.

    cd /work/main && .venv/bin/python tests/robustness/table.py > docs/robustness.md

Every case is run through the real CLI (as ``test_corpus.py`` does) and its observed outcome is written beside
the expected one; ``test_corpus.py`` checks that the documented rows are exactly the corpus, so they cannot drift.
"""

from __future__ import annotations

import logging
import os
import sys
import tempfile
from pathlib import Path

if __name__ == "__main__":  # run as a script: make ``robustness`` importable as in the test suite
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from robustness.harness import Case, Env, check_outcome, observed_summary, run_case  # noqa: E402

HEADER = ("input kind", "stage", "expected outcome", "observed outcome")
DOC_TEXT = Path(__file__).with_name("robustness_doc.md")


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def table_rows(cases: list[Case]) -> list[list[str]]:
    """The static columns (kind, stage, expected) of each case, escaped for a markdown table."""
    return [[_cell(case.kind), f"`{case.stage}`", _cell(case.expected)] for case in cases]


def format_row(cells: list[str]) -> str:
    return "| " + " | ".join(cells) + " |"


def observe(cases: list[Case], root: Path) -> list[str]:
    """Run every case; the observed outcome, or ``FAILED: ...`` when it breaks the contract."""
    env = Env(root / "env")
    observed = []
    for index, case in enumerate(cases):
        invocation, result = run_case(case, env, root / f"case-{index:03d}")
        summary = observed_summary(case, result, root)
        try:
            check_outcome(case, invocation, result)
        except AssertionError as exc:
            summary = f"FAILED: {str(exc).splitlines()[0]}"
        observed.append(_cell(summary))
        print(f"{case.kind}: {summary}", file=sys.stderr)
    return observed


def main() -> None:
    from robustness.corpus import CASES

    logging.basicConfig(level=logging.ERROR, handlers=[logging.NullHandler()])
    with tempfile.TemporaryDirectory() as tmp:
        os.environ["EQDIFF_CACHE"] = str(Path(tmp) / "cache")  # a private tiny preset, as in the test suite
        observed = observe(CASES, Path(tmp))
    lines = [format_row(list(HEADER)), format_row(["---"] * 4)]
    lines += [format_row([*row, seen]) for row, seen in zip(table_rows(CASES), observed, strict=True)]
    text = DOC_TEXT.read_text(encoding="utf-8").replace("{table}", "\n".join(lines))
    sys.stdout.write(text)


if __name__ == "__main__":
    main()
