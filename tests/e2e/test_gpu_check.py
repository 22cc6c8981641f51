"""``scripts/gpu_check.sh --dry-run``: the prepared GPU check runs every step on the CPU with the tiny preset, so
the script a lent GPU runs cannot rot between the rare sessions that have one (BENCHMARKS.md)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "gpu_check.sh"
STEPS = ("env", "tests", "sample", "train", "generate", "bench")


@pytest.mark.slow
def test_gpu_check_dry_run_runs_every_step(tmp_path):
    env = {**os.environ, "OUT": str(tmp_path), "PYTHON": sys.executable, "EQDIFF_CACHE": str(tmp_path / "cache")}
    result = subprocess.run(["bash", str(SCRIPT), "--dry-run"], capture_output=True, text=True, env=env, timeout=1200)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-2000:]
    summary = (tmp_path / "summary.txt").read_text().splitlines()
    assert [line.split()[:2] for line in summary] == [[step, "ok"] for step in STEPS]
    assert "### tiny on CPU" in (tmp_path / "BENCHMARKS-section.md").read_text()
    assert (tmp_path / "samples-grid.png").is_file()
    # The bench step is bench/bench.py on the tiny preset at CI size: its results, as BENCHMARKS.md reads them.
    results = json.loads((tmp_path / "bench.json").read_text())
    assert results["train"]["F"]["step_s"] > 0 and results["train"]["ratio"] > 0
    assert {"plain_b1", "eqdiff_fused_b1", "eqdiff_twocall_b1", "ratio_b1"} <= set(results["inference"])
    assert "eqdiff_fused_unshared_b2" in results["inference"]  # at batch 1 every reference row is distinct
    assert "EqDiff / plain step time" in (tmp_path / "BENCHMARKS-section.md").read_text()


def test_gpu_check_refuses_an_unknown_option():
    result = subprocess.run(["bash", str(SCRIPT), "--gpu"], capture_output=True, text=True)
    assert result.returncode == 2 and "unknown option --gpu" in result.stderr
