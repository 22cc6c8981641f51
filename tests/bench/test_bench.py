"""The FLOP counter on the tiny preset on CPU (CI-sized, unchanged on a GPU). ``bench/bench.py`` runs end to end
in ``scripts/gpu_check.sh --dry-run`` (tests/e2e/test_gpu_check.py), which checks its results."""

from __future__ import annotations

import json
import runpy
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

BENCH = Path(__file__).resolve().parents[2] / "bench" / "bench.py"
FLOPS = BENCH.parent / "flops.py"


def test_flop_count_includes_attention_on_cpu():
    # CPU SDPA runs a kernel FlopCounterMode has no formula for: without ours, attention would count as 0.
    count = runpy.run_path(str(FLOPS))["count"]
    q, k, v = (torch.randn(2, 4, 64, 16) for _ in range(3))
    sdpa = count(lambda: F.scaled_dot_product_attention(q, k, v))["Global"]
    explicit = count(lambda: (q @ k.transpose(-1, -2) / 4).softmax(-1) @ v)["Global"]
    assert sdpa == explicit == 2 * (2 * 2 * 4 * 64 * 64 * 16)


@pytest.mark.slow
def test_flops_of_the_tiny_preset(tmp_path):
    out, md = tmp_path / "flops.json", tmp_path / "BENCHMARKS.md"
    main = runpy.run_path(str(FLOPS))["main"]
    argv = ["--preset", "tiny", "--resolution", "32", "--batches", "1,2", "--json", str(out), "--markdown", str(md)]
    assert main(argv) == 0
    train, infer = json.loads(out.read_text())["train"], json.loads(out.read_text())["inference"]
    assert train["F"] > train["A"] > 0
    # FLOPs per image do not depend on the batch, unless rows are shared.
    assert infer["plain_b2"] == pytest.approx(infer["plain_b1"], rel=0.01)
    assert infer["eqdiff_fused_unshared_b2"] == pytest.approx(infer["eqdiff_fused_b1"], rel=0.01)
    assert infer["eqdiff_fused_b2"] < 0.9 * infer["eqdiff_fused_unshared_b2"]
    assert "EqDiff / plain FLOPs per step" in md.read_text()
