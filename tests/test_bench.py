"""The benchmark script runs end to end on the tiny preset on CPU (issue 6: CI-sized, unchanged on a GPU)."""

from __future__ import annotations

import json
import runpy
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[1] / "bench" / "bench.py"


@pytest.mark.slow
def test_bench_runs_on_the_tiny_preset(tmp_path, monkeypatch):
    out, md = tmp_path / "bench.json", tmp_path / "BENCHMARKS.md"
    argv = [
        str(BENCH),
        "--preset",
        "tiny",
        "--device",
        "cpu",
        "--resolution",
        "32",
        "--train-steps",
        "1",
        "--warmup",
        "1",
        "--rounds",
        "1",
        "--inference-steps",
        "2",
        "--batches",
        "1",
        "--json",
        str(out),
        "--markdown",
        str(md),
    ]
    monkeypatch.setattr(sys, "argv", argv)
    with pytest.raises(SystemExit) as exit_info:
        runpy.run_path(str(BENCH), run_name="__main__")
    assert exit_info.value.code == 0
    results = json.loads(out.read_text())
    assert results["train"]["F"]["step_s"] > 0 and results["train"]["ratio"] > 0
    assert {"plain_b1", "eqdiff_fused_b1", "eqdiff_twocall_b1", "ratio_b1"} <= set(results["inference"])
    assert "EqDiff / plain step time" in md.read_text()
