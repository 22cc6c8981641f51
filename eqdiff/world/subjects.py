"""Held-out world subjects as photo folders (docs/world.md, "Held-out subjects"): ``NN.png`` photos of one
identity, all in one style (a photo) on cluttered backgrounds, and ``masks/NN.png``, the world's exact masks.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from eqdiff.errors import DataError
from eqdiff.prep.sample import png_bytes, write_sample_files
from eqdiff.world.render import render
from eqdiff.world.vocabulary import HELD_OUT, Identity, random_spec

SUBJECT_SIDE = 64


def held_out_subject(name: str) -> Identity:
    """The held-out identity named by its shape (the class noun: ``ball``, ``box``, ...)."""
    for identity in HELD_OUT:
        if identity.shape == name:
            return identity
    raise DataError(
        f"--world: {name!r} is not a held-out world subject (one of: {', '.join(i.shape for i in HELD_OUT)})"
    )


def make_world_subject(directory: str | Path, name: str, num_photos: int = 5, seed: int = 0) -> Path:
    """Write ``num_photos`` photos of the held-out subject ``name`` and their masks into ``directory``."""
    identity = held_out_subject(name)
    directory = Path(directory)
    rng = np.random.default_rng([seed, HELD_OUT.index(identity)])
    files: dict[Path, bytes] = {}
    for index in range(num_photos):
        image, mask = render(random_spec(rng, identity=identity, scene="clutter", style="photo"), SUBJECT_SIDE)
        files[directory / f"{index:02d}.png"] = png_bytes(image)
        files[directory / "masks" / f"{index:02d}.png"] = png_bytes(mask)
    return write_sample_files(directory, files)
