"""``eqdiff augment``: a seeded, fixed set of reference views per photo (DESIGN §4.5).

The work is ``eqdiff.augment.augment_subject``.

Reads params sections ``augment`` and ``train`` (``train.resolution``).
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from eqdiff.augment import augment_subject
from eqdiff.config import AugmentConfig, TrainConfig
from eqdiff.data import discover_subject
from eqdiff.output_safety import claim_output


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--subject-dir", type=Path, required=True, help="folder of the subject's photos")
    parser.add_argument("--masks", type=Path, required=True, help="folder of the masks (<stem>.png)")
    parser.add_argument("--out", type=Path, required=True, help="output folder (views/, masks/, sheet.png)")


def augment_stage(subject_dir: Path, masks: Path, out: Path, params: dict[str, Any]) -> Path:
    """The stage (every door calls this): reference views of ``subject_dir``'s photos into ``out``."""
    config = AugmentConfig.from_mapping(params.get("augment"))
    train = TrainConfig.from_mapping(params.get("train"))
    # The class noun is not read by this stage; the folder name stands in for it.
    subject = discover_subject(subject_dir, Path(subject_dir).name)
    claim_output(out, "augment", manifest="augment.json", reads=[masks], folders=[subject.directory])
    return augment_subject(subject, masks, out, train.resolution, config)


def run(args: argparse.Namespace, params: dict[str, Any]) -> None:
    augment_stage(args.subject_dir, args.masks, args.out, params)
