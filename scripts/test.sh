#!/usr/bin/env bash
# Quickstart command 2: set up (idempotent) and run the test suite with ruff.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export OMP_NUM_THREADS="${OMP_NUM_THREADS:-1}" HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false
.venv/bin/ruff check .
set +e
.venv/bin/python -m pytest "$@"
status=$?
set -e
# pytest exits 5 when no test was collected (e.g. a -k filter that matches nothing): not a failure of the suite.
[ "$status" -eq 5 ] && { echo "pytest collected no tests"; exit 0; }
exit "$status"
