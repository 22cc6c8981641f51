"""``eqdiff augment``: a seeded, fixed set of reference views per photo (docs/method.md, Data and batch).

The work is ``eqdiff.prep.augment.augment_subject``.

Reads params sections ``augment`` and ``train`` (``train.resolution``).
"""

from __future__ import annotations

import argparse
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from eqdiff.config import AugmentConfig, Params, TrainConfig
from eqdiff.io.output_safety import claim_output
from eqdiff.prep.augment import augment_subject
from eqdiff.prep.subjects import discover_subject


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--subject-dir", type=Path, required=True, help="folder of the subject's photos")
    parser.add_argument("--masks", type=Path, required=True, help="folder of the masks (<stem>.png)")
    parser.add_argument("--out", type=Path, required=True, help="output folder (views/, masks/, sheet.png)")


def run(subject_dir: Path, masks: Path, out: Path, params: Params | Mapping[str, Any]) -> Path:
    """The stage (every door calls this): reference views of ``subject_dir``'s photos into ``out``."""
    params = Params.of(params)
    config, train = params.section(AugmentConfig), params.section(TrainConfig)
    # The class noun is not read by this stage; the folder name stands in for it.
    subject = discover_subject(subject_dir, Path(subject_dir).name)
    claim_output(out, "augment", manifest="augment.json", reads=[masks], folders=[subject.directory])
    return augment_subject(subject, masks, out, train.resolution, config)


def main(args: argparse.Namespace, params: Params) -> None:
    run(args.subject_dir, args.masks, args.out, params)
