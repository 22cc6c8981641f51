"""``eqdiff masks``: subject masks and an overlay sheet (docs/architecture.md, Offline models and data;
docs/method.md, MGDP).

The work is ``eqdiff.prep.masks.compute_masks``. Reads params section ``masks``.
"""

from __future__ import annotations

import argparse
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from eqdiff.config import MasksConfig, Params
from eqdiff.io.output_safety import claim_output, optional_path
from eqdiff.prep.masks import compute_masks, files_dir
from eqdiff.prep.subjects import discover_subject
from eqdiff.stages.arguments import add_class_arguments, class_noun_argument


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--subject-dir", type=Path, required=True, help="folder of the subject's photos")
    add_class_arguments(parser, "grounded-sam's prompt")
    parser.add_argument("--out", type=Path, required=True, help="output folder: <stem>.png, overlay.png, masks.json")


def run(subject_dir: Path, class_noun: str, out: Path, params: Params | Mapping[str, Any]) -> Path:
    """The stage (every door calls this): masks of ``subject_dir``'s photos into ``out``."""
    config = Params.of(params).section(MasksConfig)
    subject = discover_subject(subject_dir, class_noun)
    model_files = (
        "grounding_dino_config",
        "grounding_dino_checkpoint",
        "sam_checkpoint",
        "text_encoder_dir",
    )
    reads = [optional_path(getattr(config, name)) for name in model_files]
    if config.files_dir:
        reads.append(files_dir(config, subject))
    claim_output(out, "masks", manifest="masks.json", reads=reads, folders=[subject.directory])
    return compute_masks(subject, out, config)


def main(args: argparse.Namespace, params: Params) -> None:
    run(args.subject_dir, class_noun_argument(args, params), args.out, params)
