#!/usr/bin/env bash
# Quickstart command 2: set up (idempotent) and run the test suite with ruff on pytest-xdist workers.
#   bash scripts/test.sh                  the whole suite (what CI runs)
#   bash scripts/test.sh --fast           the inner loop: no e2e tests (tests/e2e/) and no slow ones
#   bash scripts/test.sh tests/method -x  any other arguments go to pytest
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export OMP_NUM_THREADS="${OMP_NUM_THREADS:-1}" HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false
.venv/bin/ruff check .
# CI: the report's gallery test renders in headless Chromium; without it that test skips, with a reason.
if [ "${CI:-}" = "true" ] && ! command -v chromium >/dev/null 2>&1; then
    { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; } \
        || echo "warning: could not install chromium; the gallery rendering test will be skipped" >&2
fi
args=()
fast=""
for arg in "$@"; do
  if [ "$arg" = "--fast" ]; then
    fast=1
    args+=(-m "not gpu and not weights and not e2e and not slow")
  else
    args+=("$arg")
  fi
done
set +e
# --durations and each file's time (console_output_style=times): where the time goes, in every CI log (the
# suite has a time budget). One worker more than cores: the end-to-end tests spend part of their time waiting on
# servers and subprocesses, and a third worker on 2 cores fills it (measured: 1465 s against 1680 s with two).
# --dist loadgroup: each test is a unit of work, except that tests sharing a module fixture (the DVC demo project,
# a trained concept) are grouped on one worker (tests/conftest.py); --no-loadscope-reorder keeps the suite's
# longest-first order. PYTEST_WORKERS=0 runs in one process.
# The fast tier has no servers to wait on: one worker per core (each worker collects the whole suite, ~20 s of
# imports, so a third one on 2 cores costs more than it fills; measured 291 s against 309 s with three).
# (the cores this process may use; not `nproc`, which answers OMP_NUM_THREADS, set to 1 above)
cores=$(.venv/bin/python -c 'import os; print(len(os.sched_getaffinity(0)))')
extra=1
if [ -n "$fast" ]; then extra=0; fi
workers="${PYTEST_WORKERS:-$((cores + extra))}"
.venv/bin/python -m pytest -n "$workers" --dist loadgroup --no-loadscope-reorder --durations=25 \
  -o console_output_style=times "${args[@]}"
status=$?
set -e
# pytest exits 5 when no test was collected (e.g. a -k filter that matches nothing): not a failure of the suite.
[ "$status" -eq 5 ] && { echo "pytest collected no tests"; exit 0; }
exit "$status"
