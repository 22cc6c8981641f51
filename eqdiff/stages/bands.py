"""``eqdiff bands``: band images and their VAE posterior parameters, cached (DESIGN §4.1).

The work is ``eqdiff.bands_cache.compute_band_cache``. Reads params sections ``model``, ``fdte`` (band options
only: ``shape``, ``colour``, ``output``, ``cutoff_low``, ``cutoff_high``) and ``train`` (``resolution``, ``resize``).
Runs on CUDA when it is available.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from eqdiff.bands_cache import compute_band_cache
from eqdiff.config import FdteConfig, ModelConfig, TrainConfig
from eqdiff.data import discover_subject
from eqdiff.output_safety import claim_output, model_input


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--subject-dir", type=Path, required=True, help="folder of the subject's photos")
    parser.add_argument("--masks", type=Path, required=True, help="folder of the masks (<stem>.png)")
    parser.add_argument("--out", type=Path, required=True, help="output folder (bands.safetensors, sheet.png)")


def bands_stage(subject_dir: Path, masks: Path, out: Path, params: dict[str, Any]) -> Path:
    """The stage (every door calls this): band images and VAE posteriors of ``subject_dir``'s photos into ``out``."""
    model = ModelConfig.from_mapping(params.get("model"))
    fdte = FdteConfig.from_mapping(params.get("fdte"))
    train = TrainConfig.from_mapping(params.get("train"))
    # The class noun is not read by this stage; the folder name stands in for it.
    subject = discover_subject(subject_dir, Path(subject_dir).name)
    reads = [masks, model_input(model)]
    claim_output(out, "bands", manifest="bands.json", reads=reads, folders=[subject.directory])
    return compute_band_cache(subject, masks, out, train.resolution, model, fdte, train.resize)


def run(args: argparse.Namespace, params: dict[str, Any]) -> None:
    bands_stage(args.subject_dir, args.masks, args.out, params)
