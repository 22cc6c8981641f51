"""Mutation check of docs/method.md ("Mutation check"): revert each recipe decision and see its test fail.

Every row of that table names a decision reverted in the code (a small text change) and the test that must fail
when it is. ``MUTATIONS`` below is that table as data: for each row its text, the file, an exact ``old`` snippet
and its ``new`` replacement, and the pytest node id(s) that must fail. One mutation at a time, the script writes
the change, runs the test(s) in a subprocess (``pytest -x -q -p no:cacheprovider``) and restores the file byte for
byte (``try``/``finally``, mtime included); at the end it checks that ``git diff --quiet`` holds for every file it
touched. ``old`` must occur exactly once in its file: when the code drifts, the script stops with an error naming
the mutation instead of testing something else.

A mutation "FAILS as required" when pytest reports a failed or erroring test (exit code 1); it "SURVIVED" when the
test(s) pass; "BROKEN" is any other outcome (a collection error, a timeout): the mutation must be rewritten.

Run it from the repository root, one test at a time (30-60 minutes for all on a 2-core machine)::

    OMP_NUM_THREADS=1 .venv/bin/python scripts/mutation_check.py              # all mutations
    OMP_NUM_THREADS=1 .venv/bin/python scripts/mutation_check.py --only 12    # mutation 12 (see --list)
    OMP_NUM_THREADS=1 .venv/bin/python scripts/mutation_check.py -k "L_ra"    # rows whose text contains L_ra
    .venv/bin/python scripts/mutation_check.py --list                         # the table, nothing run
    .venv/bin/python scripts/mutation_check.py --check-docs                   # script and docs table agree?

``--baseline`` also runs each selected mutation's test(s) on the unchanged code first (they must pass). The exit
code is 1 if any mutation survived or broke, 2 if a file could not be restored.

The files must be clean in git before a run (the restore check compares against git). A subprocess gets
``PYTHONPATH`` = the repository root, so the checkout's own ``eqdiff`` is the one mutated and imported.
"""

from __future__ import annotations

import argparse
import os
import re
import signal
import subprocess
import sys
import time
from dataclasses import dataclass

from mutation_rows import DOC, ROOT, TRAINING_STEP, Mutation  # noqa: E402 - scripts/ is on sys.path
from mutation_rows_more import MORE  # noqa: E402

MUTATIONS: tuple[Mutation, ...] = TRAINING_STEP + MORE


# ----------------------------------------------------------------------------------------------------------
# Applying, running, restoring.


class DriftError(RuntimeError):
    """The code no longer holds a mutation's ``old`` snippet exactly once."""


def mutated_text(mutation: Mutation, text: str) -> str:
    count = text.count(mutation.old)
    if count != 1:
        raise DriftError(
            f"{mutation.file}: the snippet of {mutation.row!r} occurs {count} times (expected exactly once): "
            f"the code drifted, update the mutation\n--- snippet ---\n{mutation.old}"
        )
    return text.replace(mutation.old, mutation.new)


def check_all_apply(mutations: list[Mutation]) -> None:
    """Every selected mutation's snippet is in its file exactly once and the mutated file still compiles (checked
    before anything is written)."""
    for mutation in mutations:
        compile(mutated_text(mutation, (ROOT / mutation.file).read_text(encoding="utf-8")), mutation.file, "exec")


def git_clean(files: list[str]) -> bool:
    return subprocess.run(["git", "diff", "--quiet", "--", *files], cwd=ROOT).returncode == 0


@dataclass
class Outcome:
    status: str
    """``FAILS as required``, ``SURVIVED`` or ``BROKEN``."""
    detail: str
    seconds: float


def summary_and_reason(output: str) -> str:
    """pytest's last summary line and the first ``E`` line (why the test failed), shortened."""
    lines = [line.strip() for line in output.splitlines() if line.strip()]
    summary = lines[-1] if lines else "(no output)"
    reason = next((line for line in lines if line.startswith("E ")), "")
    reason = re.sub(r"\s+", " ", reason[1:].strip())
    return summary + (f" | {reason[:160]}" if reason else "")


def run_tests(tests: tuple[str, ...], timeout: float) -> tuple[int | None, str]:
    """(pytest exit code or None on timeout, its output)."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), "PYTHONDONTWRITEBYTECODE": "1"}
    env.setdefault("OMP_NUM_THREADS", "1")
    command = [sys.executable, "-m", "pytest", "-x", "-q", "-p", "no:cacheprovider", *tests]
    try:
        done = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired as exc:
        output = exc.stdout.decode() if isinstance(exc.stdout, bytes) else (exc.stdout or "")
        return None, output + f"\ntimed out after {timeout:.0f} s"
    return done.returncode, done.stdout + done.stderr


def apply_and_run(mutation: Mutation, timeout: float) -> Outcome:
    """Write the mutation, run its tests, and always restore the file (content and timestamps)."""
    path = ROOT / mutation.file
    original = path.read_bytes()
    stat = path.stat()
    start = time.monotonic()
    try:
        path.write_bytes(mutated_text(mutation, original.decode("utf-8")).encode("utf-8"))
        code, output = run_tests(mutation.tests, timeout)
    finally:
        path.write_bytes(original)
        os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))  # cached bytecode of the original stays valid
    seconds = time.monotonic() - start
    detail = summary_and_reason(output)
    if code == 1:
        return Outcome("FAILS as required", detail, seconds)
    if code == 0:
        return Outcome("SURVIVED", detail, seconds)
    return Outcome("BROKEN", f"pytest exit {code}: {detail}", seconds)


# ----------------------------------------------------------------------------------------------------------
# The docs table.


def docs_rows() -> list[str]:
    """First cells of the table in docs/method.md's "Mutation check" section."""
    text = DOC.read_text(encoding="utf-8")
    section = text.split("## Mutation check", 1)[1].split("\n## ", 1)[0]
    rows = [line for line in section.splitlines() if line.startswith("| ") and not line.startswith("| mutation |")]
    return [row[2:].rsplit(" | ", 1)[0].strip() for row in rows]


def check_docs() -> int:
    documented, scripted = docs_rows(), [m.row for m in MUTATIONS]
    missing = [row for row in documented if row not in scripted]
    extra = [row for row in scripted if row not in documented]
    for row in missing:
        print(f"in docs/method.md, not in the script: {row}")
    for row in extra:
        print(f"in the script, not in docs/method.md: {row}")
    print(f"{len(documented)} rows in docs/method.md, {len(scripted)} mutations in the script")
    return 1 if missing or extra else 0


# ----------------------------------------------------------------------------------------------------------


def _interrupt(signum, frame) -> None:
    raise KeyboardInterrupt


def select(args: argparse.Namespace) -> list[tuple[int, Mutation]]:
    chosen = list(enumerate(MUTATIONS, 1))
    if args.only:
        bad = [n for n in args.only if not 1 <= n <= len(MUTATIONS)]
        if bad:
            raise SystemExit(f"--only {bad[0]}: mutations are numbered 1 to {len(MUTATIONS)} (see --list)")
        chosen = [(n, m) for n, m in chosen if n in args.only]
    if args.k:
        needle = args.k.lower()
        chosen = [(n, m) for n, m in chosen if needle in m.row.lower() or any(needle in t.lower() for t in m.tests)]
    return chosen


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", type=int, action="append", metavar="N", help="run mutation N (repeatable)")
    parser.add_argument("-k", metavar="TEXT", help="run the mutations whose row text or test id contains TEXT")
    parser.add_argument("--list", action="store_true", help="list the mutations and their tests; run nothing")
    parser.add_argument("--check-docs", action="store_true", help="compare the rows with docs/method.md's table")
    parser.add_argument("--baseline", action="store_true", help="first check each test passes on unchanged code")
    parser.add_argument("--timeout", type=float, default=1800.0, help="seconds per pytest run (default 1800)")
    args = parser.parse_args(argv)

    if args.check_docs:
        return check_docs()
    chosen = select(args)
    if args.list:
        for number, mutation in chosen:
            print(f"{number:2d}. {mutation.row}  [{mutation.file}]")
            for test in mutation.tests:
                print(f"      {test}")
        return 0
    if not chosen:
        print("no mutation selected")
        return 1

    files = sorted({m.file for _, m in chosen})
    if not git_clean(files):
        print(f"refusing to run: uncommitted changes in {', '.join(files)} (the restore check compares with git)")
        return 2
    check_all_apply([m for _, m in chosen])
    # SIGTERM (e.g. a killed background run) unwinds like Ctrl-C, so the ``finally`` restores the file.
    signal.signal(signal.SIGTERM, _interrupt)

    results: list[tuple[int, Mutation, Outcome]] = []
    started = time.monotonic()
    interrupted = False
    try:
        for number, mutation in chosen:
            if args.baseline:
                code, output = run_tests(mutation.tests, args.timeout)
                if code != 0:
                    print(
                        f"{number:2d}. {mutation.row}: BASELINE FAILS, the test does not pass unchanged: "
                        f"{summary_and_reason(output)}",
                        flush=True,
                    )
                    results.append((number, mutation, Outcome("BROKEN", "baseline fails", 0.0)))
                    continue
            outcome = apply_and_run(mutation, args.timeout)
            results.append((number, mutation, outcome))
            print(f"{number:2d}. {outcome.status:17s} {mutation.row}  ({outcome.seconds:.0f} s)", flush=True)
            print(f"      {outcome.detail}", flush=True)
    except KeyboardInterrupt:
        interrupted = True
        print("interrupted", flush=True)
    finally:
        restored = git_clean(files)
        if not restored:
            print(f"ERROR: git diff is not empty for {', '.join(files)} after the run: restore them by hand")

    caught = sum(o.status == "FAILS as required" for _, _, o in results)
    print(f"\n{caught} of {len(results)} mutations fail as required ({time.monotonic() - started:.0f} s in all)")
    for number, mutation, outcome in results:
        if outcome.status != "FAILS as required":
            print(f"  {outcome.status}: {number}. {mutation.row} -> {', '.join(mutation.tests)}")
    if not restored:
        return 2
    if interrupted:
        return 130
    return 0 if caught == len(results) else 1


if __name__ == "__main__":
    sys.exit(main())
