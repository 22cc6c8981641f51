"""``eqdiff masks``: subject masks and an overlay sheet (DESIGN §2, §4.2).

The work is ``eqdiff.masks.compute_masks``. Reads params section ``masks``.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from eqdiff.config import ConfigError, MasksConfig
from eqdiff.data import discover_subject
from eqdiff.masks import compute_masks


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--subject-dir", type=Path, required=True, help="folder of the subject's photos")
    parser.add_argument("--class-noun", required=True, help="the subject's class noun (grounded-sam's prompt)")
    parser.add_argument("--out", type=Path, required=True, help="output folder: <stem>.png, overlay.png, masks.json")


def run(args: argparse.Namespace, params: dict[str, Any]) -> None:
    section = params.get("masks")
    if section is not None and not isinstance(section, dict):
        raise ConfigError(f"masks: expected a mapping of keys, got {section!r}")
    config = MasksConfig.from_mapping(section)
    subject = discover_subject(args.subject_dir, args.class_noun)
    compute_masks(subject, args.out, config)
