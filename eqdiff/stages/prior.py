"""``eqdiff prior``: class images for prior preservation (DESIGN §4.4).

The work is ``eqdiff.prior.prepare_class_images``. Reads params sections ``model``, ``prior`` and ``train``
(``num_class_images``, ``resolution``). The output folder is resumable and must persist between runs: in
``dvc.yaml`` declare it with ``persist: true``.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from eqdiff.classes import add_class_arguments, class_noun_argument
from eqdiff.config import ModelConfig, PriorConfig, TrainConfig
from eqdiff.prior import prepare_class_images


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_class_arguments(parser, "the class prompt's noun")
    parser.add_argument("--out", type=Path, required=True, help="output folder of NNNN.png class images")


def prior_stage(class_noun: str, out: Path, params: dict[str, Any]) -> Path:
    """The stage (every door calls this): class images of ``class_noun`` into ``out`` (resumable)."""
    model = ModelConfig.from_mapping(params.get("model"))
    prior = PriorConfig.from_mapping(params.get("prior"))
    train = TrainConfig.from_mapping(params.get("train"))
    prepare_class_images(class_noun, out, train.num_class_images, prior, model, train.resolution)
    return Path(out)


def run(args: argparse.Namespace, params: dict[str, Any]) -> None:
    prior_stage(class_noun_argument(args, params), args.out, params)
