"""``eqdiff sample``: write the embedded demo's synthetic subject (DESIGN §2) -> ``make_sample_subject``.

Reads no params section. Writes ``--out/NN.png`` photos and ``--out/masks/NN.png`` masks, each file atomically;
nothing is downloaded or copied. The same ``--num-photos`` and ``--seed`` give the same bytes, so the DVC stage
that calls it is stable.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from eqdiff.config.base import MAX_SEED
from eqdiff.errors import DataError
from eqdiff.sample_subject import make_sample_subject


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", type=Path, required=True, help="subject folder to write (NN.png + masks/)")
    parser.add_argument("--num-photos", type=int, default=4, help="photos to draw (>= 2, default 4)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the drawings (default 0)")


def run(args: argparse.Namespace, params: dict[str, Any]) -> None:
    if not 2 <= args.num_photos <= 1000:
        raise DataError(f"--num-photos: expected 2 to 1000 photos (RRA needs a second photo), got {args.num_photos}")
    if not 0 <= args.seed <= MAX_SEED:
        raise DataError(f"--seed: expected 0 to {MAX_SEED}, got {args.seed}")
    make_sample_subject(args.out, num_photos=args.num_photos, seed=args.seed)
