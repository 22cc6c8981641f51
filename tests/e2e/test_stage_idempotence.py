"""Stages skip unchanged work (README.md, Prefect flows): re-running a stage with unchanged inputs rewrites nothing;
changing one band option recomputes the bands only."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from support.stage_cli import run_cli

PARAMS = {
    "train": {"resolution": 64, "num_class_images": 2},
    "augment": {"views_per_photo": 2},
    "prior": {"num_inference_steps": 2, "batch_size": 2},
}


def _snapshot(root: Path) -> dict[str, tuple[int, int]]:
    """(inode, mtime) of the folder and of every file under it: a rewrite or a swapped-in folder changes one."""
    entries = {".": (root.stat().st_ino, root.stat().st_mtime_ns)}
    for path in sorted(root.rglob("*")):
        entries[str(path.relative_to(root))] = (path.stat().st_ino, path.stat().st_mtime_ns)
    return entries


@pytest.fixture
def stage_argv(subject_dir: Path, tmp_path: Path):
    params = tmp_path / "params.yaml"
    params.write_text(yaml.safe_dump(PARAMS))
    masks = str(subject_dir / "masks")

    def argv(stage: str, *overrides: str) -> list[str]:
        extra = [a for o in overrides for a in ("-S", o)]
        common = ["--params", str(params), *extra]
        if stage == "prior":
            return ["prior", *common, "--class-noun", "toy", "--out", str(tmp_path / "prior")]
        return [stage, *common, "--subject-dir", str(subject_dir), "--masks", masks, "--out", str(tmp_path / stage)]

    return argv


def test_unchanged_inputs_rewrite_nothing_and_band_options_recompute_bands_only(stage_argv, tmp_path):
    stages = ("augment", "bands", "prior")
    for stage in stages:
        assert run_cli(stage_argv(stage)) == 0
    before = {stage: _snapshot(tmp_path / stage) for stage in stages}
    for stage in stages:
        assert run_cli(stage_argv(stage)) == 0
    assert {stage: _snapshot(tmp_path / stage) for stage in stages} == before

    # Band probabilities are not band options: the cache stays.
    assert run_cli(stage_argv("bands", "fdte.p_l=0.2", "fdte.p_o=0.7")) == 0
    assert _snapshot(tmp_path / "bands") == before["bands"]

    tensors_before = (tmp_path / "bands" / "bands.safetensors").read_bytes()
    for stage in stages:
        assert run_cli(stage_argv(stage, "fdte.cutoff_low=40")) == 0
    assert (tmp_path / "bands" / "bands.safetensors").read_bytes() != tensors_before
    assert _snapshot(tmp_path / "bands") != before["bands"]
    for stage in ("augment", "prior"):
        assert _snapshot(tmp_path / stage) == before[stage]
