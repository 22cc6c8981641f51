#!/usr/bin/env bash
# Creates .venv and installs the project with its pinned stack. Idempotent: a second run with the same
# pyproject.toml does nothing but a hash comparison.
set -euo pipefail
cd "$(dirname "$0")/.."

PY=""
# Prefer 3.11, the version the pinned stack was checked on (docs/architecture.md, Offline models and data); any 3.11+ works.
for candidate in python3.11 python3.12 python3.13 python3; do
  if command -v "$candidate" >/dev/null 2>&1 && "$candidate" -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then
    PY="$candidate"; break
  fi
done
[ -n "$PY" ] || { echo "error: Python 3.11 or newer is required (none found on PATH)" >&2; exit 1; }

if [ ! -x .venv/bin/python ]; then
  echo "setup: creating .venv with $($PY --version)"
  "$PY" -m venv .venv
fi

stamp=.venv/.eqdiff-installed
want=$(cat pyproject.toml | sha256sum | cut -d' ' -f1)
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  echo "setup: installing the pinned stack into .venv (first run takes a few minutes)"
  .venv/bin/python -m pip install --quiet --upgrade pip
  # pip byte-compiles what it installs on one core (about 2 min of the 4 here); compileall spreads the same work
  # over every core. A file that does not compile (a package's Python 2 test data) is skipped, as pip skips it.
  .venv/bin/python -m pip install --quiet --no-compile -e '.[dev]'
  site=$(.venv/bin/python -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
  .venv/bin/python -m compileall -q -j 0 "$site" >/dev/null 2>&1 || true
  echo "$want" > "$stamp"
fi
