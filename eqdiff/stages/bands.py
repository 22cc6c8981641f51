"""``eqdiff bands``: band images and their VAE posterior parameters, cached (docs/method.md, FDTE).

The work is ``eqdiff.prep.bands.compute_band_cache``. Reads params sections ``model``, ``fdte`` (band options
only: ``shape``, ``colour``, ``output``, ``cutoff_low``, ``cutoff_high``) and ``train`` (``resolution``, ``resize``).
Runs on CUDA when it is available.
"""

from __future__ import annotations

import argparse
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from eqdiff.config import FdteConfig, ModelConfig, Params, TrainConfig
from eqdiff.io.output_safety import claim_output
from eqdiff.models.presets import model_input
from eqdiff.prep.bands import compute_band_cache
from eqdiff.prep.subjects import discover_subject


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--subject-dir", type=Path, required=True, help="folder of the subject's photos")
    parser.add_argument("--masks", type=Path, required=True, help="folder of the masks (<stem>.png)")
    parser.add_argument("--out", type=Path, required=True, help="output folder (bands.safetensors, sheet.png)")


def run(subject_dir: Path, masks: Path, out: Path, params: Params | Mapping[str, Any]) -> Path:
    """The stage (every door calls this): band images and VAE posteriors of ``subject_dir``'s photos into ``out``."""
    params = Params.of(params)
    model, fdte, train = params.section(ModelConfig), params.section(FdteConfig), params.section(TrainConfig)
    # The class noun is not read by this stage; the folder name stands in for it.
    subject = discover_subject(subject_dir, Path(subject_dir).name)
    reads = [masks, model_input(model)]
    claim_output(out, "bands", manifest="bands.json", reads=reads, folders=[subject.directory])
    return compute_band_cache(subject, masks, out, train.resolution, model, fdte, train.resize)


def main(args: argparse.Namespace, params: Params) -> None:
    run(args.subject_dir, args.masks, args.out, params)
