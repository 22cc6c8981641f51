"""The ``weights`` tier: random-weight files with the structure of the real downloads, each loaded through the
project's own loaders and passed by ``eqdiff check-models``.

The small-config version runs in CI. The full-size version (SD v1.x 1.07 B parameters in the original
single-file layout, CLIP ViT-B/32, DINO ViT-S/16, SAM vit_b, GroundingDINO SwinT-OGC + BERT-base) is the
``weights`` marker, off by default: ``pytest -m weights tests/models/test_weight_files.py`` (several GiB of disk and
memory; it prints its timings and peak memory).
"""

from __future__ import annotations

import resource
import time
from pathlib import Path

import pytest
import torch
from support.weight_files import SIZES, SMALL_SAM_TYPE, build_weight_files, small_sam

from eqdiff.cli import main
from eqdiff.config import EvaluateConfig, MasksConfig, ModelConfig


def _peak_rss_gib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # ru_maxrss is KiB on Linux


def _params(paths: dict[str, Path], sam_type: str) -> dict:
    return {
        "model": {"preset": "sd-v1", "path": str(paths["sd_single_file"])},
        "evaluate": {"clip_model": str(paths["clip_model"]), "dino_model": str(paths["dino_model"])},
        "masks": {
            "backend": "grounded-sam",
            "sam_model_type": sam_type,
            **{k: str(paths[k]) for k in ("grounding_dino_config", "grounding_dino_checkpoint", "text_encoder_dir")},
            "sam_checkpoint": str(paths["sam_checkpoint"]),
        },
    }


def _as_overrides(params: dict) -> list[str]:
    return [f"-S{section}.{key}={value}" for section, values in params.items() for key, value in values.items()]


def run_tier(root: Path, size: str, capsys: pytest.CaptureFixture) -> dict[str, float]:
    """Build every file, load each through the project's loaders, check them all; returns timings (s)."""
    from eqdiff.evaluation.evaluate import load_metric_models
    from eqdiff.models.components import load_components
    from eqdiff.prep.grounded_sam import load_grounded_sam

    timings = {}
    start = time.perf_counter()
    paths = build_weight_files(root, size)
    timings["build"] = time.perf_counter() - start
    params = _params(paths, SIZES[size]().sam_type)

    start = time.perf_counter()
    assert main(["check-models", *_as_overrides(params)]) == 0, capsys.readouterr().err
    timings["check-models"] = time.perf_counter() - start
    table = capsys.readouterr().out
    assert table.count(" ok") == 7 and "PROBLEM" not in table, table

    start = time.perf_counter()
    components = load_components(ModelConfig.from_mapping(params["model"]))
    assert components.unet.dtype == torch.float32 and components.native_resolution == (512 if size == "full" else 64)
    del components
    timings["load sd"] = time.perf_counter() - start
    start = time.perf_counter()
    metric_models = load_metric_models(EvaluateConfig.from_mapping(params["evaluate"]), device="cpu")
    assert metric_models.calibrated
    del metric_models
    timings["load clip+dino"] = time.perf_counter() - start
    start = time.perf_counter()
    load_grounded_sam.cache_clear()
    grounded = load_grounded_sam(MasksConfig.from_mapping(params["masks"]))
    assert grounded.predictor.model.image_encoder.img_size == 1024
    load_grounded_sam.cache_clear()
    del grounded
    timings["load grounded-sam"] = time.perf_counter() - start
    return timings


@pytest.fixture
def small_sam_type(monkeypatch: pytest.MonkeyPatch) -> str:
    """The small SAM in segment_anything's registry, where the loader looks up ``masks.sam_model_type``."""
    from segment_anything import sam_model_registry

    monkeypatch.setitem(sam_model_registry, SMALL_SAM_TYPE, small_sam)
    return SMALL_SAM_TYPE


def test_small_weight_files_load_through_the_project_loaders(tmp_path, small_sam_type, capsys):
    run_tier(tmp_path, "small", capsys)


@pytest.mark.weights
def test_full_size_weight_files_load_through_the_project_loaders(tmp_path, capsys):
    torch.set_num_threads(max(1, torch.get_num_threads()))
    timings = run_tier(tmp_path, "full", capsys)
    files = [p for p in tmp_path.rglob("*") if p.suffix in (".safetensors", ".pth")]
    sizes = {str(p.relative_to(tmp_path)): p.stat().st_size / 2**30 for p in files}
    with capsys.disabled():
        print("\nfull-size weights tier:", {k: round(v, 1) for k, v in timings.items()}, "s")
        print("files (GiB):", {k: round(v, 2) for k, v in sizes.items()}, f"peak RSS {_peak_rss_gib():.1f} GiB")
