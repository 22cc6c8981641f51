"""``eqdiff train``: fine-tune a concept on a subject folder -> ``eqdiff.training.train.train_concept``.

Reads params sections ``model``, ``concept``, ``fdte``, ``mgdp``, ``rra``, ``losses``, ``train``, ``generate``
(validation sampling), ``augment`` (in-memory reference views when no ``--augment`` dir is given) and ``prior``
(class prompt; class images generated into ``<work-dir>/prior`` when no ``--prior`` dir is given).

Outputs: the concept directory (``--out``) and a work directory (``--work-dir``, default ``<out>-work``) of
checkpoints, validation images and ``losses.jsonl``; ``--losses FILE`` copies that log out when the concept is
written.
"""

from __future__ import annotations

import argparse
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from eqdiff.config import AugmentConfig, Params, PriorConfig
from eqdiff.stages.arguments import add_class_arguments, class_noun_argument
from eqdiff.training.recipe import LossCallback
from eqdiff.training.train import train_concept


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--subject-dir", type=Path, required=True, help="folder of the subject's photos")
    add_class_arguments(parser, "the instance and class prompts' noun")
    parser.add_argument("--out", type=Path, required=True, help="concept directory to write")
    parser.add_argument("--masks", type=Path, help="masks folder (default: <subject-dir>/masks)")
    parser.add_argument("--augment", type=Path, help="output of `eqdiff augment` (default: views made in memory)")
    parser.add_argument("--bands", type=Path, help="output of `eqdiff bands` (default: computed in memory)")
    parser.add_argument("--prior", type=Path, help="class images folder (default: generated into the work dir)")
    parser.add_argument("--work-dir", type=Path, help="checkpoints, validation images, losses (default: <out>-work)")
    parser.add_argument("--losses", type=Path, help="a copy of the finished run's per-step losses (JSON lines)")
    parser.add_argument("--device", default="auto", help="cpu, cuda, cuda:1, ... (default: cuda if available)")


def run(
    subject_dir: Path,
    class_noun: str,
    out: Path,
    params: Params | Mapping[str, Any],
    *,
    masks: Path | None = None,
    augment: Path | None = None,
    bands: Path | None = None,
    prior: Path | None = None,
    work_dir: Path | None = None,
    losses: Path | None = None,
    device: str = "auto",
    callback: LossCallback | None = None,
) -> Path:
    """The stage (every door calls this): the concept of ``subject_dir`` into ``out``; see ``train_concept``."""
    params = Params.of(params)
    return train_concept(
        subject_dir,
        class_noun,
        out,
        params.method(),
        params.section(AugmentConfig),
        params.section(PriorConfig),
        masks=masks,
        augment=augment,
        bands=bands,
        prior=prior,
        work_dir=work_dir,
        losses=losses,
        device=device,
        callback=callback,
    )


def main(args: argparse.Namespace, params: Params) -> None:
    run(
        args.subject_dir,
        class_noun_argument(args, params),
        args.out,
        params,
        masks=args.masks,
        augment=args.augment,
        bands=args.bands,
        prior=args.prior,
        work_dir=args.work_dir,
        losses=args.losses,
        device=args.device,
    )
