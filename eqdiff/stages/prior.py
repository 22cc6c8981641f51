"""``eqdiff prior``: class images for prior preservation (docs/method.md, Losses and optimisation).

The work is ``eqdiff.prep.prior.prepare_class_images``. Reads params sections ``model``, ``prior`` and ``train``
(``num_class_images``, ``resolution``). The images are made resumably where they are written: in ``--out``
itself, or with ``--work-dir`` in that folder, the finished set then copied to ``--out`` whole. dvc.yaml uses
a work folder so that its output need not be ``persist``ed (DVC's run-cache never restores persisted
outputs) while a killed ``dvc repro`` still keeps the images already made (DVC deletes an unpersisted output
before re-running its stage, never an undeclared folder).
"""

from __future__ import annotations

import argparse
import filecmp
import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from eqdiff.config import ModelConfig, Params, PriorConfig, TrainConfig
from eqdiff.io.artifacts import staged_directory
from eqdiff.io.output_safety import claim_output, optional_path
from eqdiff.models.presets import model_input
from eqdiff.prep.prior import MANIFEST_FILE, prepare_class_images
from eqdiff.stages.arguments import add_class_arguments, class_noun_argument


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_class_arguments(parser, "the class prompt's noun")
    parser.add_argument("--out", type=Path, required=True, help="output folder of NNNN.png class images")
    parser.add_argument("--work-dir", type=Path, help="make the images (resumably) here, then copy them to --out")


def publish_class_images(work_dir: Path, images: list[Path], out: Path) -> None:
    """``images`` and their manifest from ``work_dir`` as the whole of ``out`` (left alone when equal)."""
    names = sorted([p.name for p in images] + [MANIFEST_FILE])
    same_names = out.is_dir() and sorted(p.name for p in out.iterdir()) == names
    if same_names and all(filecmp.cmp(work_dir / n, out / n, shallow=False) for n in names):
        return
    with staged_directory(out) as staging:
        for name in names:
            shutil.copy2(work_dir / name, staging / name)


def run(class_noun: str, out: Path, params: Params | Mapping[str, Any], work_dir: Path | None = None) -> Path:
    """The stage (every door calls this): class images of ``class_noun`` into ``out`` (resumable)."""
    params = Params.of(params)
    model, prior, train = params.section(ModelConfig), params.section(PriorConfig), params.section(TrainConfig)
    real = optional_path(prior.real_images_dir)
    reads = [model_input(model)] if real is None else []
    for path in (out, work_dir):  # the published folder and the resumable one are both this stage's own
        if path is not None:
            claim_output(path, "prior", manifest=MANIFEST_FILE, reads=reads, folders=[real])
    target = Path(work_dir if work_dir is not None else out)
    images = prepare_class_images(class_noun, target, train.num_class_images, prior, model, train.resolution)
    if work_dir is not None:
        publish_class_images(target, images, Path(out))
    return Path(out)


def main(args: argparse.Namespace, params: Params) -> None:
    run(class_noun_argument(args, params), args.out, params, args.work_dir)
