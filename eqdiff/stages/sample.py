"""``eqdiff sample``: write a synthetic subject (docs/architecture.md, Offline models and data) ->
``make_sample_subject`` (the drawn toy) or, with ``--world NAME``, the world plug-in's subject source (a held-out
subject of the procedural world, docs/world.md; registered in ``eqdiff.plugins``), its photos all in one style
(``--photo-style``) or scene (``--photo-scene``) when asked: a styled subject set (docs/world.md, "Styled subject
sets").

Reads no params section. Writes ``--out/NN.png`` photos and ``--out/masks/NN.png`` masks, each file atomically;
nothing is downloaded or copied. The same ``--num-photos`` and ``--seed`` give the same bytes, so the DVC stage
that calls it is stable.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from eqdiff.config import Params
from eqdiff.config.base import MAX_SEED
from eqdiff.errors import DataError
from eqdiff.prep.sample import make_sample_subject


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", type=Path, required=True, help="subject folder to write (NN.png + masks/)")
    parser.add_argument("--num-photos", type=int, default=4, help="photos to draw (>= 2, default 4)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the drawings (default 0)")
    parser.add_argument(
        "--world", metavar="NAME", default=None, help="draw the held-out world subject NAME (ball, box, star, ...)"
    )
    parser.add_argument(
        "--photo-style", metavar="STYLE", default=None, help="with --world: every photo in this world style"
    )
    parser.add_argument(
        "--photo-scene", metavar="SCENE", default=None, help="with --world: every photo in this world scene"
    )


def run(
    out: Path,
    num_photos: int = 4,
    seed: int = 0,
    world: str | None = None,
    photo_style: str | None = None,
    photo_scene: str | None = None,
) -> Path:
    """The stage (every door calls this): the sample subject's photos and masks into ``out``."""
    if not 2 <= num_photos <= 1000:
        raise DataError(f"--num-photos: expected 2 to 1000 photos (RRA needs a second photo), got {num_photos}")
    if not 0 <= seed <= MAX_SEED:
        raise DataError(f"--seed: expected 0 to {MAX_SEED}, got {seed}")
    if world is None and (photo_style or photo_scene):
        flag = "--photo-style" if photo_style else "--photo-scene"
        raise DataError(f"{flag}: only the world's subjects have styles and scenes; add --world NAME")
    if world is not None:
        from eqdiff.plugins import load_plugins

        return load_plugins().subject_sources["world"](out, world, num_photos, seed, photo_style, photo_scene)
    return make_sample_subject(out, num_photos=num_photos, seed=seed)


def main(args: argparse.Namespace, params: Params) -> None:
    run(args.out, args.num_photos, args.seed, args.world, args.photo_style, args.photo_scene)
